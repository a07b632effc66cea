#![allow(clippy::unwrap_used)]
//! The node's monitoring, live (DESIGN §8): the real `avsnode run` binary under load of every
//! outcome, its `/metrics` read by `promtool check metrics` and scraped by a real Prometheus that
//! evaluates every query of the Grafana dashboard, and `/readyz` following its performer's health.
//!
//! Prometheus and `promtool` come with Debian's `prometheus` package; `PROMETHEUS` and `PROMTOOL`
//! may name other binaries. Without them the tests skip with a note on stderr, except under CI
//! (`CI=true`), where they fail.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::ops::AddAssign;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::common::{AVS, AvsSpec, SCHEMES, TestNode, now_secs};
use avsnode_aggregator::Aggregator;
use avsnode_proto::executor::TaskResult;
use avsnode_proto::stream::stream_event;
use avsnode_signer::Scheme;
use avsnode_signing::LocalKey;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::Code;

/// An AVS whose performer fails every task with INTERNAL.
const FAILING_AVS: &str = "0x000000000000000000000000000000000000fa11";
/// Its performer's arguments (also how its process is found among the node's children).
const FAILING_PERFORMER: &[&str] = &["--fail-rate", "1"];

/// The Grafana dashboard, relative to the workspace root.
pub(crate) const DASHBOARD: &str = "deploy/grafana/avsnode-dashboard.json";
/// The alert rules, loaded into the test's Prometheus so they are evaluated on live data too.
const ALERTS: &str = "deploy/prometheus/alerts.yml";

/// One HTTP request's answer.
#[derive(Debug)]
pub(crate) struct Response {
    pub(crate) status: u16,
    pub(crate) head: String,
    pub(crate) body: String,
}

/// How long one HTTP request may take.
const HTTP_TIMEOUT: Duration = Duration::from_secs(10);

/// A plain HTTP/1.0 GET (the server closes the connection after the body: no chunking).
async fn try_http_get(addr: SocketAddr, target: &str) -> std::io::Result<Response> {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        stream
            .write_all(format!("GET {target} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
            .await?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await?;
        Ok::<_, std::io::Error>(raw)
    };
    let raw = tokio::time::timeout(HTTP_TIMEOUT, exchange)
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no answer in time"))??;
    let text = String::from_utf8(raw)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidData, "no end of headers"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidData, "no status"))?;
    Ok(Response {
        status,
        head: head.to_owned(),
        body: body.to_owned(),
    })
}

/// [`try_http_get`], panicking on an I/O error.
pub(crate) async fn http_get(addr: SocketAddr, target: &str) -> Response {
    try_http_get(addr, target)
        .await
        .unwrap_or_else(|e| panic!("GET http://{addr}{target}: {e}"))
}

/// `/metrics` of the node: 200, the text exposition's content type, and the text.
async fn scrape(metrics: SocketAddr) -> String {
    let response = http_get(metrics, "/metrics").await;
    assert_eq!(response.status, 200, "/metrics: {response:?}");
    assert!(
        response
            .head
            .to_ascii_lowercase()
            .contains("content-type: text/plain; version=0.0.4"),
        "/metrics content type: {}",
        response.head
    );
    response.body
}

/// The path of a tool: `$ENV`, else the first `NAME` on `PATH` or in `/usr/bin`. `None` (after
/// saying why on stderr) when it is missing outside CI; under `CI=true` a missing tool fails.
#[allow(clippy::print_stderr)]
fn tool(name: &str, env: &str) -> Option<PathBuf> {
    if let Some(path) = std::env::var_os(env) {
        return Some(PathBuf::from(path));
    }
    let found = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .chain([PathBuf::from("/usr/bin")])
        .map(|dir| dir.join(name))
        .find(|path| path.is_file());
    if found.is_none() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{name} is not installed (looked at ${env}, PATH and /usr/bin), and CI must run the \
             live monitoring tests: install Prometheus (apt-get install prometheus) or set {env}"
        );
        eprintln!(
            "skipping: {name} is not installed (apt-get install prometheus, or set {env}); \
             under CI=true this is a failure"
        );
    }
    found
}

/// One sample of the text exposition.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// Every sample of a text exposition (comments skipped). Panics on a line it cannot read.
fn parse_exposition(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|line| !line.trim().is_empty() && !line.starts_with('#'))
        .map(|line| parse_sample(line).unwrap_or_else(|| panic!("unreadable sample {line:?}")))
        .collect()
}

fn parse_sample(line: &str) -> Option<Sample> {
    let name_end = line.find(['{', ' '])?;
    let name = line[..name_end].to_owned();
    let mut rest = &line[name_end..];
    let mut labels = BTreeMap::new();
    if let Some(inner) = rest.strip_prefix('{') {
        rest = inner;
        loop {
            rest = rest.trim_start_matches([',', ' ']);
            if let Some(after) = rest.strip_prefix('}') {
                rest = after;
                break;
            }
            let (key, quoted) = rest.split_once("=\"")?;
            let mut value = String::new();
            let mut chars = quoted.char_indices();
            let end = loop {
                let (i, c) = chars.next()?;
                match c {
                    '\\' => {
                        let (_, escaped) = chars.next()?;
                        value.push(if escaped == 'n' { '\n' } else { escaped });
                    }
                    '"' => break i + 1,
                    c => value.push(c),
                }
            };
            labels.insert(key.to_owned(), value);
            rest = &quoted[end..];
        }
    }
    let value = rest.split_whitespace().next()?.parse().ok()?;
    Some(Sample {
        name,
        labels,
        value,
    })
}

/// The sum over every series of `name` whose labels include `labels`; `None` without any.
fn total(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let matching: Vec<f64> = samples
        .iter()
        .filter(|s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.value)
        .collect();
    (!matching.is_empty()).then(|| matching.iter().sum())
}

/// Polls `/metrics` (every 100 ms, at most `limit`) until `done` holds for its samples; returns
/// the text that satisfied it, or panics with `what` and the last text.
async fn scrape_until(
    metrics: SocketAddr,
    limit: Duration,
    what: &str,
    done: impl Fn(&[Sample]) -> bool,
) -> String {
    let deadline = Instant::now() + limit;
    loop {
        let text = scrape(metrics).await;
        if done(&parse_exposition(&text)) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "/metrics: not {what} within {limit:?}; last scrape:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// What [`traffic`] sent, by what the node should count.
#[derive(Debug, Default, Clone, Copy)]
struct Sent {
    /// Submissions to [`AVS`] by unary `SubmitTask`.
    unary: u64,
    /// Submissions to [`AVS`] on a `TaskStream`.
    stream: u64,
    /// Newly signed, by operator-set scheme (in [`SCHEMES`] order).
    signed: [u64; 3],
    /// Answered from the ledger (resubmissions).
    cached: u64,
    /// Refused: a forged aggregator signature.
    bad_signature: u64,
    /// Refused: a reference timestamp two hours old.
    stale: u64,
    /// Refused: a signed task id re-issued with another reference timestamp.
    ledger_conflict: u64,
    /// Submissions to [`FAILING_AVS`] (all unary), failed by its performer (INTERNAL)...
    performer_error: u64,
    /// ... or while it was restarting (UNAVAILABLE).
    performer_unavailable: u64,
}

impl Sent {
    fn signed_total(&self) -> u64 {
        self.signed.iter().sum()
    }

    fn rejected(&self) -> u64 {
        self.bad_signature + self.stale + self.ledger_conflict
    }

    fn failed(&self) -> u64 {
        self.performer_error + self.performer_unavailable
    }
}

impl AddAssign for Sent {
    fn add_assign(&mut self, other: Sent) {
        self.unary += other.unary;
        self.stream += other.stream;
        for (mine, theirs) in self.signed.iter_mut().zip(other.signed) {
            *mine += theirs;
        }
        self.cached += other.cached;
        self.bad_signature += other.bad_signature;
        self.stale += other.stale;
        self.ledger_conflict += other.ledger_conflict;
        self.performer_error += other.performer_error;
        self.performer_unavailable += other.performer_unavailable;
    }
}

fn assert_refused(outcome: Result<TaskResult, tonic::Status>, code: Code, what: &str) {
    match outcome {
        Ok(result) => panic!("{what}: expected {code:?}, got a result {result:?}"),
        Err(status) => assert_eq!(status.code(), code, "{what}: {status:?}"),
    }
}

/// One round of tasks of every outcome, each answer checked: signed by unary (one per
/// operator-set scheme, from rotating aggregator schemes) and on a stream (`stream_tasks`),
/// cached (a resubmission), rejected (forged signature, stale task on both intakes, a re-issued
/// task id: ledger conflict) and failed (the failing AVS).
async fn traffic(node: &TestNode, round: usize, stream_tasks: usize) -> Sent {
    let fixture = node.fixture();
    let mut sent = Sent::default();
    let mut first = None;
    for (i, set) in SCHEMES.into_iter().enumerate() {
        let task = fixture.task(AVS, set, &((round * 10 + i) as u64 + 2).to_be_bytes());
        let submission = fixture.sign(SCHEMES[(i + round) % 3], &task);
        let result = node
            .submit(submission.clone())
            .await
            .unwrap_or_else(|s| panic!("a good {set} task: {s:?}"));
        fixture.assert_verifies(&result, &task);
        sent.unary += 1;
        sent.signed[i] += 1;
        first.get_or_insert((task, submission, result));
    }
    let (task, submission, answer) = first.unwrap();

    let again = node.submit(submission).await.unwrap();
    assert_eq!(again, answer, "a resubmission is answered from the ledger");
    sent.unary += 1;
    sent.cached += 1;

    let mut reissued = task.clone();
    reissued.reference_timestamp -= 10;
    let outcome = node.submit(fixture.sign(Scheme::Ecdsa, &reissued)).await;
    assert_refused(outcome, Code::FailedPrecondition, "a re-issued task id");
    sent.unary += 1;
    sent.ledger_conflict += 1;

    let impostor = Aggregator::new(
        fixture.aggregator(Scheme::Ecdsa).address,
        LocalKey::generate(Scheme::Ecdsa),
    );
    let outcome = node
        .submit(impostor.sign(&fixture.task(AVS, Scheme::Ecdsa, &[7])))
        .await;
    assert_refused(outcome, Code::PermissionDenied, "a forged signature");
    sent.unary += 1;
    sent.bad_signature += 1;

    let mut stale = fixture.task(AVS, Scheme::Ecdsa, &[8]);
    stale.reference_timestamp = now_secs() - 2 * 3600;
    let outcome = node.submit(fixture.sign(Scheme::Ecdsa, &stale)).await;
    assert_refused(outcome, Code::FailedPrecondition, "a stale task");
    sent.unary += 1;
    sent.stale += 1;

    let doomed = fixture.task(FAILING_AVS, Scheme::Ecdsa, &[9]);
    match node.submit(fixture.sign(Scheme::Ecdsa, &doomed)).await {
        Err(status) if status.code() == Code::Internal => sent.performer_error += 1,
        Err(status) if status.code() == Code::Unavailable => sent.performer_unavailable += 1,
        other => panic!("a task for the failing AVS: expected INTERNAL, got {other:?}"),
    }

    let mut submissions = Vec::with_capacity(stream_tasks + 1);
    let mut expected = HashMap::new();
    for i in 0..stream_tasks {
        let task = fixture.task(
            AVS,
            SCHEMES[i % 3],
            &((round * 1000 + i) as u64).to_be_bytes(),
        );
        let submission = fixture.sign(SCHEMES[(i / 3) % 3], &task);
        expected.insert(submission.task_id.clone(), i % 3);
        submissions.push(submission);
    }
    let mut stale = fixture.task(AVS, Scheme::Bn254, &[10]);
    stale.reference_timestamp = now_secs() - 2 * 3600;
    let stale = fixture.sign(Scheme::Bn254, &stale);
    let stale_id = stale.task_id.clone();
    submissions.insert(submissions.len() / 2, stale);
    sent.stream += submissions.len() as u64;
    for event in node.stream(submissions).await {
        match event.kind.expect("an event with a kind") {
            stream_event::Kind::Result(result) => {
                let set = expected
                    .remove(&result.task_id)
                    .unwrap_or_else(|| panic!("an unexpected stream result {result:?}"));
                sent.signed[set] += 1;
            }
            stream_event::Kind::Rejection(rejection) => {
                assert_eq!(rejection.task_id, stale_id, "{rejection:?}");
                assert_eq!(
                    rejection.code,
                    Code::FailedPrecondition as i32,
                    "{rejection:?}"
                );
                sent.stale += 1;
            }
        }
    }
    assert!(expected.is_empty(), "no stream result for {expected:?}");
    sent
}

/// The example performers `node` started (its child processes) whose command line holds the
/// arguments `marker` in a row: found by parent pid, so other tests' performers never match.
fn performer_pids(node: &TestNode, marker: &[&str]) -> Vec<u32> {
    let node_pid = node.pid().expect("the node is running");
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // pid (comm) state ppid …; comm may hold spaces and parentheses.
        let Some((_, after_comm)) = stat.rsplit_once(')') else {
            continue;
        };
        let mut fields = after_comm.split_whitespace();
        let state = fields.next();
        let ppid = fields.next().and_then(|p| p.parse::<u32>().ok());
        if ppid != Some(node_pid) || state == Some("Z") {
            continue;
        }
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let argv: Vec<String> = cmdline
            .split(|&b| b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let is_performer = argv
            .first()
            .is_some_and(|a| a.ends_with("avsnode-example-performer"));
        if is_performer && argv.windows(marker.len()).any(|w| w == marker) {
            pids.push(pid);
        }
    }
    pids
}

/// SIGKILLs the one performer of `node` whose arguments hold `marker`; returns its pid.
fn kill_performer(node: &TestNode, marker: &[&str]) -> u32 {
    let pids = performer_pids(node, marker);
    assert_eq!(
        pids.len(),
        1,
        "exactly one performer of the node with arguments {marker:?}: {pids:?}"
    );
    let status = Command::new("kill")
        .args(["-KILL", &pids[0].to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill -KILL {}", pids[0]);
    pids[0]
}

/// A running Prometheus scraping one node every second, stopped (SIGKILL) when dropped. A shell
/// watchdog stops it too if the test process dies first.
struct Prometheus {
    child: Child,
    watchdog: Child,
    address: SocketAddr,
    dir: tempfile::TempDir,
}

impl Prometheus {
    /// Starts `binary` on a free loopback port, scraping `target` as job "avsnode" with the
    /// project's alert rules, and waits (at most 60 s) until it is ready.
    async fn start(binary: &Path, target: SocketAddr) -> Prometheus {
        // The port is free when asked; should another process take it first, Prometheus exits
        // and the next attempt takes another (in a fresh directory).
        for _attempt in 0..3 {
            let dir = tempfile::Builder::new()
                .prefix("avsnode-prometheus-")
                .tempdir()
                .unwrap();
            let alerts = avsnode_tests::workspace_root().join(ALERTS);
            let config = format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
                 rule_files:\n  - {:?}\n\
                 scrape_configs:\n  - job_name: avsnode\n    metrics_path: /metrics\n    \
                 static_configs:\n      - targets: [\"{target}\"]\n",
                alerts.canonicalize().unwrap().display().to_string()
            );
            std::fs::write(dir.path().join("prometheus.yml"), config).unwrap();
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let address = SocketAddr::from(([127, 0, 0, 1], port));
            let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
            let child = Command::new(binary)
                .arg(format!(
                    "--config.file={}",
                    dir.path().join("prometheus.yml").display()
                ))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    dir.path().join("data").display()
                ))
                .arg(format!("--web.listen-address={address}"))
                .arg("--web.enable-lifecycle")
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .unwrap_or_else(|e| panic!("starting {}: {e}", binary.display()));
            let watchdog = Command::new("/bin/sh")
                .args([
                    "-c",
                    "while kill -0 \"$1\" 2>/dev/null && kill -0 \"$2\" 2>/dev/null; do sleep 0.5; done; \
                     kill -KILL \"$2\" 2>/dev/null",
                    "watchdog",
                ])
                .arg(std::process::id().to_string())
                .arg(child.id().to_string())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            let mut prometheus = Prometheus {
                child,
                watchdog,
                address,
                dir,
            };
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                if let Ok(response) = try_http_get(address, "/-/ready").await
                    && response.status == 200
                {
                    return prometheus;
                }
                if prometheus.child.try_wait().unwrap().is_some() {
                    break;
                }
                if Instant::now() > deadline {
                    panic!(
                        "Prometheus was not ready within 60 s:\n{}",
                        prometheus.log()
                    );
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let log = prometheus.log();
            if !log.contains("address already in use") {
                panic!("Prometheus exited during start-up:\n{log}");
            }
            // Dropped: killed, its directory removed.
            drop(prometheus);
        }
        panic!("Prometheus found no free port in 3 attempts");
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }

    /// `GET /api/v1/ENDPOINT?QUERY`: the JSON answer, which must have status "success".
    async fn api(&self, endpoint: &str, query: &str) -> Value {
        let response = http_get(self.address, &format!("/api/v1/{endpoint}?{query}")).await;
        let json: Value = serde_json::from_str(&response.body)
            .unwrap_or_else(|e| panic!("/api/v1/{endpoint}?{query}: not JSON ({e}): {response:?}"));
        assert_eq!(
            json["status"], "success",
            "/api/v1/{endpoint}?{query}: {json}"
        );
        json
    }

    /// An instant query: its result (a vector's series, or a scalar as one element).
    async fn query(&self, expr: &str) -> Vec<Value> {
        let json = self
            .api("query", &format!("query={}", url_encode(expr)))
            .await;
        match &json["data"]["result"] {
            Value::Array(series) if json["data"]["resultType"] == "vector" => series.clone(),
            Value::Array(series) if json["data"]["resultType"] == "matrix" => series.clone(),
            scalar @ Value::Array(_) => vec![scalar.clone()],
            other => panic!("query {expr:?}: unexpected result {other}"),
        }
    }

    /// Polls `expr` (every 250 ms, at most `limit`) until it has a result.
    async fn query_until_some(&self, expr: &str, limit: Duration) -> Vec<Value> {
        let deadline = Instant::now() + limit;
        loop {
            let result = self.query(expr).await;
            if !result.is_empty() || Instant::now() > deadline {
                return result;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

impl Drop for Prometheus {
    #[allow(clippy::print_stderr)]
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = self.watchdog.wait();
        if std::thread::panicking() {
            let log = self.log();
            let lines: Vec<&str> = log.lines().collect();
            eprintln!(
                "---- prometheus log (last 50 lines) ----\n{}\n---- end of log ----",
                lines[lines.len().saturating_sub(50)..].join("\n")
            );
        }
    }
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
pub(crate) fn url_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A sample's value from the query API (`[time, "value"]`).
pub(crate) fn api_value(series: &Value) -> f64 {
    let value = if series.is_array() {
        &series[1]
    } else {
        &series["value"][1]
    };
    value
        .as_str()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no value in {series}"))
}

/// Every panel target's `expr` in the dashboard (rows' nested panels included), with its panel's
/// title.
pub(crate) fn dashboard_queries(dashboard: &Value) -> Vec<(String, String)> {
    fn walk(panels: &Value, out: &mut Vec<(String, String)>) {
        for panel in panels.as_array().into_iter().flatten() {
            let title = panel["title"].as_str().unwrap_or("(untitled)");
            for target in panel["targets"].as_array().into_iter().flatten() {
                if let Some(expr) = target["expr"].as_str() {
                    out.push((title.to_owned(), expr.to_owned()));
                }
            }
            walk(&panel["panels"], out);
        }
    }
    let mut out = Vec::new();
    walk(&dashboard["panels"], &mut out);
    out
}

/// The dashboard's template variables replaced as Grafana would with every AVS selected:
/// `$avs` by `avs_regex`, the interval variables by fixed ranges. Panics on a variable it does
/// not know, so a new one is handled here rather than sent to Prometheus as text.
pub(crate) fn substitute(expr: &str, avs_regex: &str) -> String {
    let mut out = expr.to_owned();
    for (variable, value) in [
        ("${avs:regex}", avs_regex),
        ("${avs}", avs_regex),
        ("$avs", avs_regex),
        ("${__rate_interval}", "30s"),
        ("$__rate_interval", "30s"),
        ("${__interval}", "5s"),
        ("$__interval", "5s"),
        ("${__range}", "5m"),
        ("$__range", "5m"),
    ] {
        out = out.replace(variable, value);
    }
    assert!(
        !out.contains('$'),
        "dashboard query {expr:?} uses a template variable this test does not substitute: {out:?}"
    );
    out
}

/// A series (name, labels it must have) and its expected value (`None`: no such series).
type Expectation<'a> = (&'a str, Vec<(&'a str, &'a str)>, Option<f64>);

/// Every outcome through one node with two AVSs (one whose performer fails every task): its
/// `/metrics` passes `promtool check metrics` without a single lint message, and every family
/// counts exactly what was sent.
#[tokio::test(flavor = "multi_thread")]
async fn promtool_accepts_live_metrics() {
    let Some(promtool) = tool("promtool", "PROMTOOL") else {
        return;
    };
    let node = TestNode::builder()
        .avs(AvsSpec::new(AVS))
        .avs(AvsSpec::new(FAILING_AVS).performer(FAILING_PERFORMER))
        .start();
    let metrics = node.metrics_address();
    let mut sent = Sent::default();
    for round in 0..2 {
        sent += traffic(&node, round, 12).await;
    }
    assert!(
        sent.performer_error >= 2 && sent.performer_unavailable == 0,
        "{sent:?}"
    );

    // Gauges are refreshed once a second; the stream's close reaches the node asynchronously.
    let signed = sent.signed_total() as f64;
    let text = scrape_until(
        metrics,
        Duration::from_secs(10),
        "refreshed (ledger records, streams closed, performers up)",
        |s| {
            total(s, "avsnode_ledger_records", &[]) == Some(signed)
                && total(s, "avsnode_streams_open", &[]) == Some(0.0)
                && total(s, "avsnode_performer_up", &[]) == Some(2.0)
        },
    )
    .await;

    let mut check = Command::new(&promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = check.stdin.take().unwrap();
    let input = text.clone();
    let writer =
        std::thread::spawn(move || std::io::Write::write_all(&mut stdin, input.as_bytes()));
    let output = check.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success() && said.trim().is_empty(),
        "promtool check metrics: {} and said:\n{said}\n--- on ---\n{text}",
        output.status
    );

    let samples = parse_exposition(&text);
    let value = |name: &str, labels: &[(&str, &str)]| total(&samples, name, labels);
    let count = |n: u64| Some(n as f64);
    let expectations: Vec<Expectation<'_>> = vec![
        (
            "avsnode_tasks_received_total",
            vec![("avs", AVS), ("intake", "unary")],
            count(sent.unary),
        ),
        (
            "avsnode_tasks_received_total",
            vec![("avs", AVS), ("intake", "stream")],
            count(sent.stream),
        ),
        (
            "avsnode_tasks_received_total",
            vec![("avs", FAILING_AVS), ("intake", "unary")],
            count(sent.failed()),
        ),
        (
            "avsnode_tasks_completed_total",
            vec![("avs", AVS), ("outcome", "signed")],
            count(sent.signed_total()),
        ),
        (
            "avsnode_tasks_completed_total",
            vec![("avs", AVS), ("outcome", "cached")],
            count(sent.cached),
        ),
        (
            "avsnode_tasks_completed_total",
            vec![("avs", AVS), ("outcome", "rejected")],
            count(sent.rejected()),
        ),
        (
            "avsnode_tasks_completed_total",
            vec![("avs", FAILING_AVS), ("outcome", "failed")],
            count(sent.failed()),
        ),
        (
            "avsnode_tasks_completed_total",
            vec![("avs", AVS), ("outcome", "failed")],
            // Created at zero at start-up (Metrics::init_avs) so `increase()` sees the first one.
            count(0),
        ),
        (
            "avsnode_task_rejections_total",
            vec![("avs", AVS), ("reason", "bad_signature")],
            count(sent.bad_signature),
        ),
        (
            "avsnode_task_rejections_total",
            vec![("avs", AVS), ("reason", "stale")],
            count(sent.stale),
        ),
        (
            "avsnode_task_rejections_total",
            vec![("avs", AVS), ("reason", "ledger_conflict")],
            count(sent.ledger_conflict),
        ),
        (
            "avsnode_task_rejections_total",
            vec![("avs", FAILING_AVS), ("reason", "performer_error")],
            count(sent.performer_error),
        ),
        (
            "avsnode_ledger_conflicts_total",
            vec![("avs", AVS)],
            count(sent.ledger_conflict),
        ),
        (
            "avsnode_task_stage_seconds_count",
            vec![("avs", AVS), ("stage", "total")],
            count(sent.unary + sent.stream),
        ),
        (
            "avsnode_task_stage_seconds_count",
            vec![("avs", FAILING_AVS), ("stage", "total")],
            count(sent.failed()),
        ),
        (
            "avsnode_task_stage_seconds_count",
            vec![("avs", AVS), ("stage", "execute")],
            count(sent.signed_total()),
        ),
        (
            "avsnode_task_stage_seconds_count",
            vec![("avs", AVS), ("stage", "sign")],
            count(sent.signed_total()),
        ),
        ("avsnode_ledger_records", vec![], count(sent.signed_total())),
        ("avsnode_tasks_inflight", vec![("avs", AVS)], Some(0.0)),
        ("avsnode_queue_depth", vec![("avs", AVS)], Some(0.0)),
        (
            "avsnode_performer_up",
            vec![("avs", AVS), ("performer", "process")],
            Some(1.0),
        ),
        (
            "avsnode_performer_up",
            vec![("avs", FAILING_AVS), ("performer", "process")],
            Some(1.0),
        ),
        (
            "avsnode_build_info",
            vec![("version", env!("CARGO_PKG_VERSION"))],
            Some(1.0),
        ),
        ("avsnode_ready", vec![], Some(1.0)),
        ("avsnode_streams_open", vec![], Some(0.0)),
    ];
    let mut wrong = Vec::new();
    for (name, labels, expected) in &expectations {
        let got = value(name, labels);
        if got != *expected {
            wrong.push(format!("{name}{labels:?} = {got:?}, expected {expected:?}"));
        }
    }
    for (i, scheme) in SCHEMES.into_iter().enumerate() {
        let scheme = scheme.as_str();
        let signatures = value(
            "avsnode_signatures_total",
            &[("scheme", scheme), ("backend", "local"), ("result", "ok")],
        );
        // Two per task: the result signature and the auth signature.
        if signatures != count(2 * sent.signed[i]) {
            wrong.push(format!(
                "avsnode_signatures_total{{scheme={scheme}}} = {signatures:?}, expected {}",
                2 * sent.signed[i]
            ));
        }
        let timed = value("avsnode_sign_seconds_count", &[("scheme", scheme)]);
        if timed != count(sent.signed[i]) {
            wrong.push(format!(
                "avsnode_sign_seconds_count{{scheme={scheme}}} = {timed:?}, expected {}",
                sent.signed[i]
            ));
        }
    }
    // Group commit: at least one durable commit, at most one per signed task.
    let commits = value("avsnode_ledger_commit_seconds_count", &[]).unwrap_or(0.0);
    if !(1.0..=signed).contains(&commits) {
        wrong.push(format!(
            "avsnode_ledger_commit_seconds_count = {commits}, expected 1..={signed}"
        ));
    }
    let rss = value("process_resident_memory_bytes", &[]).unwrap_or(0.0);
    if rss <= 1e6 {
        wrong.push(format!("process_resident_memory_bytes = {rss}"));
    }
    // Histograms are cumulative: +Inf equals _count.
    for name in [
        "avsnode_task_stage_seconds",
        "avsnode_sign_seconds",
        "avsnode_ledger_commit_seconds",
    ] {
        for sample in samples.iter().filter(|s| s.name == format!("{name}_count")) {
            let mut labels: Vec<(&str, &str)> = sample
                .labels
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            labels.push(("le", "+Inf"));
            let inf = value(&format!("{name}_bucket"), &labels);
            if inf != Some(sample.value) {
                wrong.push(format!(
                    "{name}_bucket{labels:?} = {inf:?}, but _count is {}",
                    sample.value
                ));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "after {sent:?}:\n{}\n--- /metrics ---\n{text}",
        wrong.join("\n")
    );
}

/// A real Prometheus scrapes the node every second while tasks of every outcome stream through
/// it and one performer is restarted; every query of the Grafana dashboard then evaluates to
/// data, so a renamed metric or label fails here instead of drawing an empty panel. The alert
/// rules are loaded too and must all evaluate without error.
#[tokio::test(flavor = "multi_thread")]
async fn prometheus_evaluates_every_dashboard_query() {
    let Some(prometheus) = tool("prometheus", "PROMETHEUS") else {
        return;
    };
    let path = avsnode_tests::workspace_root().join(DASHBOARD);
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("reading {}: {e}", path.display())),
    )
    .unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()));
    // The "Chain reads" row needs a node with [chain]: the next test evaluates it.
    let queries: Vec<_> = dashboard_queries(&dashboard)
        .into_iter()
        .filter(|(_, expr)| !is_chain_query(expr))
        .collect();
    assert!(
        queries.len() >= 10,
        "only {} queries found in {DASHBOARD}: {queries:?}",
        queries.len()
    );

    let node = Arc::new(
        TestNode::builder()
            .avs(AvsSpec::new(AVS))
            .avs(AvsSpec::new(FAILING_AVS).performer(FAILING_PERFORMER))
            .start(),
    );
    let metrics = node.metrics_address();

    // A restart, so the restart counter exists: the node notices at once, restarts after
    // 200 ms, and counts it within a second.
    kill_performer(&node, FAILING_PERFORMER);
    scrape_until(
        metrics,
        Duration::from_secs(20),
        "counting the failing AVS's performer restart, with the performer up again",
        |s| {
            total(
                s,
                "avsnode_performer_restarts_total",
                &[("avs", FAILING_AVS)],
            )
            .is_some_and(|n| n >= 1.0)
                && total(s, "avsnode_performer_up", &[("avs", FAILING_AVS)]) == Some(1.0)
        },
    )
    .await;

    let prometheus = Prometheus::start(&prometheus, metrics).await;
    let up = prometheus
        .query_until_some("up{job=\"avsnode\"} == 1", Duration::from_secs(30))
        .await;
    assert_eq!(
        up.len(),
        1,
        "Prometheus did not scrape the node within 30 s: {up:?}\n{}",
        prometheus.log()
    );

    // Load of every outcome until the queries are done, so rates over the last 30 s have data.
    let stop = Arc::new(AtomicBool::new(false));
    let load = tokio::spawn({
        let node = node.clone();
        let stop = stop.clone();
        async move {
            let mut sent = Sent::default();
            let mut round = 0;
            while !stop.load(Ordering::Relaxed) {
                sent += traffic(&node, round, 24).await;
                round += 1;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            (round, sent)
        }
    });
    let started = Instant::now();
    // Several scrapes of the load: rates and increases need two samples in their range.
    let scraped = prometheus
        .query_until_some(
            "count_over_time(avsnode_tasks_completed_total{outcome=\"failed\"}[1m]) >= 5",
            Duration::from_secs(60),
        )
        .await;
    assert!(
        !scraped.is_empty(),
        "Prometheus did not scrape 5 times within 60 s of load"
    );
    if load.is_finished() {
        panic!("the load ended early: {:?}", load.await);
    }

    let served = format!("{AVS}|{FAILING_AVS}");
    let mut problems = Vec::new();
    let mut checked = 0;
    for (title, expr) in &queries {
        let query = substitute(expr, &served);
        let result = prometheus
            .query_until_some(&query, Duration::from_secs(10))
            .await;
        if result.is_empty() {
            problems.push(format!("panel {title:?}: {query} has no data"));
        } else if !result.iter().any(|series| api_value(series).is_finite()) {
            problems.push(format!(
                "panel {title:?}: {query} has no finite value: {result:?}"
            ));
        } else {
            checked += 1;
        }
    }

    // Template variables of the form label_values(METRIC, LABEL) list every served AVS.
    for variable in dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let definition = variable["query"]["query"]
            .as_str()
            .or_else(|| variable["query"].as_str())
            .unwrap_or_default();
        let Some(args) = definition
            .strip_prefix("label_values(")
            .and_then(|a| a.strip_suffix(')'))
        else {
            continue;
        };
        let (metric, label) = args.rsplit_once(',').unwrap_or(("", args));
        let (metric, label) = (metric.trim(), label.trim());
        let json = prometheus
            .api(
                &format!("label/{label}/values"),
                &format!("match[]={}", url_encode(metric)),
            )
            .await;
        let values = json["data"].as_array().cloned().unwrap_or_default();
        for avs in [AVS, FAILING_AVS] {
            if label == "avs" && !values.contains(&Value::from(avs)) {
                problems.push(format!(
                    "variable {}: {definition} lists {values:?}, without {avs}",
                    variable["name"]
                ));
            }
        }
        if values.is_empty() {
            problems.push(format!(
                "variable {}: {definition} is empty",
                variable["name"]
            ));
        }
    }

    // The alert rules evaluate on this data without error (health "ok" once evaluated).
    let deadline = Instant::now() + Duration::from_secs(20);
    let rules = loop {
        let json = prometheus.api("rules", "type=alert").await;
        let rules: Vec<Value> = json["data"]["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
            .collect();
        if !rules.is_empty() && rules.iter().all(|r| r["health"] != "unknown") {
            break rules;
        }
        assert!(
            Instant::now() < deadline,
            "alert rules not evaluated within 20 s: {json}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    for rule in &rules {
        if rule["health"] != "ok" {
            problems.push(format!(
                "alert {}: health {} ({})",
                rule["name"], rule["health"], rule["lastError"]
            ));
        }
    }

    stop.store(true, Ordering::Relaxed);
    let (rounds, sent) = load.await.unwrap();
    assert!(
        problems.is_empty(),
        "{} of {} dashboard queries checked; after {rounds} rounds of load ({sent:?}) over {:?}:\n{}",
        checked,
        queries.len(),
        started.elapsed(),
        problems.join("\n")
    );
}

/// Queries of the dashboard's "Chain reads" row: only a node with `[chain]` exports their series.
fn is_chain_query(expr: &str) -> bool {
    expr.contains("avsnode_chain_")
}

/// The dashboard's "Chain reads" row against a node reading a real chain (the project's test
/// chain) under tasks: every query has data and a finite value, and the alert rules stay healthy.
#[tokio::test(flavor = "multi_thread")]
async fn prometheus_evaluates_the_chain_row_against_a_node_reading_chain() {
    let Some(prometheus) = tool("prometheus", "PROMETHEUS") else {
        return;
    };
    if !avsnode_tests::chain::chain_available() {
        return;
    }
    let path = avsnode_tests::workspace_root().join(DASHBOARD);
    let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let queries: Vec<_> = dashboard_queries(&dashboard)
        .into_iter()
        .filter(|(_, expr)| is_chain_query(expr))
        .collect();
    assert!(queries.len() >= 6, "the chain row's queries: {queries:?}");

    let fixture = crate::common::Fixture::new();
    let chain = crate::chain::prepared_chain(&fixture).await;
    let node = crate::chain::start_node(&fixture, &chain, std::slice::from_ref(&chain.url));
    let _log = node.log_on_panic();
    let prometheus = Prometheus::start(&prometheus, node.metrics_address()).await;
    let started = Instant::now();
    let mut tasks = 0;
    let mut problems = Vec::new();
    'queries: for (title, expr) in &queries {
        loop {
            // Tasks meanwhile: cache hits, and a miss (a block before the node started).
            let head = chain.head().await;
            for block in [head, 1] {
                let task = crate::chain::task_at(&fixture, Scheme::Ecdsa, block);
                let _ = node.submit(fixture.sign(Scheme::Ecdsa, &task)).await;
                tasks += 1;
            }
            let result = prometheus.query(&substitute(expr, AVS)).await;
            if result.iter().any(|series| api_value(series).is_finite()) {
                continue 'queries;
            }
            if started.elapsed() > Duration::from_secs(60) {
                problems.push(format!(
                    "panel {title:?}: {expr} has no finite value: {result:?}"
                ));
                continue 'queries;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    assert!(
        problems.is_empty(),
        "after {tasks} tasks over {:?}:\n{}\n{}",
        started.elapsed(),
        problems.join("\n"),
        prometheus.log()
    );
}

/// `/readyz` answers 503 naming the performer while it is down and 200 again once the node has
/// restarted it; `/healthz` (the process is alive) stays 200 throughout, and the restart is
/// counted.
#[tokio::test(flavor = "multi_thread")]
async fn readyz_flips_when_the_performer_dies_and_recovers() {
    // Arguments no other performer of this node has (the output is 16 bytes anyway).
    const MARKER: &[&str] = &["--delay-ms", "3", "--output-size", "16"];
    let node = TestNode::builder()
        .avs(AvsSpec::new(AVS).performer(MARKER))
        .start();
    let metrics = node.metrics_address();

    let ready = http_get(metrics, "/readyz").await;
    assert_eq!(
        (ready.status, ready.body.as_str()),
        (200, "ready\n"),
        "{ready:?}"
    );
    let healthy = http_get(metrics, "/healthz").await;
    assert_eq!(healthy.status, 200, "{healthy:?}");

    let killed = kill_performer(&node, MARKER);

    let wanted = format!("not ready: performer of AVS {AVS}");
    let mut seen_not_ready = None;
    let mut healthz_checks = 0;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ready = http_get(metrics, "/readyz").await;
        let healthy = http_get(metrics, "/healthz").await;
        assert_eq!(
            healthy.status, 200,
            "/healthz while the performer restarts: {healthy:?}"
        );
        healthz_checks += 1;
        match (ready.status, &seen_not_ready) {
            (503, _) => {
                assert!(ready.body.contains(&wanted), "/readyz: {ready:?}");
                seen_not_ready.get_or_insert(ready.body);
            }
            (200, Some(_)) => {
                assert_eq!(ready.body, "ready\n");
                break;
            }
            (200, None) => {}
            _ => panic!("/readyz: {ready:?}"),
        }
        assert!(
            Instant::now() < deadline,
            "/readyz did not go 200 → 503 → 200 within 30 s of killing the performer \
             (503 seen: {seen_not_ready:?})"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(healthz_checks >= 2);

    let replacement = performer_pids(&node, MARKER);
    assert!(
        replacement.len() == 1 && replacement[0] != killed,
        "one new performer process, not {killed}: {replacement:?}"
    );
    scrape_until(
        metrics,
        Duration::from_secs(10),
        "counting the restart",
        |s| {
            total(s, "avsnode_performer_restarts_total", &[("avs", AVS)]).is_some_and(|n| n >= 1.0)
                && total(s, "avsnode_performer_up", &[("avs", AVS)]) == Some(1.0)
                && total(s, "avsnode_ready", &[]) == Some(1.0)
        },
    )
    .await;

    // And it serves again.
    let fixture = node.fixture();
    let task = fixture.task(AVS, Scheme::Ecdsa, &[4]);
    let result = node
        .submit(fixture.sign(Scheme::Ecdsa, &task))
        .await
        .unwrap();
    fixture.assert_verifies(&result, &task);
    let healthy = http_get(metrics, "/healthz").await;
    assert_eq!((healthy.status, healthy.body.as_str()), (200, "ok\n"));
}

/// The EigenLayer AVS node API through the real binary: identity, the services list matching the
/// configuration, health 200 with everything up, 206 while one AVS's performer is killed and
/// restarted (the other still serves), 200 again after; `eigen_performance_score` 100 for the
/// AVS whose tasks are signed and 0 for the one whose performer fails them.
#[tokio::test(flavor = "multi_thread")]
async fn the_eigen_node_api_follows_the_performers_and_the_outcomes() {
    const MARKER: &[&str] = &["--delay-ms", "2", "--output-size", "24"];
    let node = TestNode::builder()
        .avs(AvsSpec::new(AVS).performer(MARKER))
        .avs(AvsSpec::new(FAILING_AVS).performer(FAILING_PERFORMER))
        .start();
    let _log = node.log_on_panic();
    let metrics = node.metrics_address();

    let identity = http_get(metrics, "/eigen/node").await;
    assert_eq!(identity.status, 200, "{identity:?}");
    let identity: Value = serde_json::from_str(&identity.body).unwrap();
    assert_eq!(identity["node_name"], "avsnode");
    assert_eq!(identity["spec_version"], "v0.0.1");
    assert!(
        identity["node_version"]
            .as_str()
            .is_some_and(|v| v.starts_with(&format!("v{}", env!("CARGO_PKG_VERSION")))),
        "{identity}"
    );
    let services = http_get(metrics, "/eigen/node/services").await;
    let services: Value = serde_json::from_str(&services.body).unwrap();
    let mut ids: Vec<String> = services["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            assert_eq!(s["status"], "Up", "{s}");
            assert!(
                !s["name"].as_str().unwrap().is_empty()
                    && !s["description"].as_str().unwrap().is_empty()
            );
            s["id"].as_str().unwrap().to_owned()
        })
        .collect();
    ids.sort();
    let mut expected: Vec<String> = ["ledger".to_owned()]
        .into_iter()
        .chain([AVS, FAILING_AVS].map(|a| format!("performer-{a}")))
        .chain(SCHEMES.map(|s| format!("signer-{s}-key")))
        .collect();
    expected.sort();
    assert_eq!(
        ids, expected,
        "one service per performer, the ledger and each signer"
    );
    assert_eq!(http_get(metrics, "/eigen/node/health").await.status, 200);
    let (status, out, _) = crate::common::avsnode_cli(&[
        "healthcheck".as_ref(),
        "--metrics".as_ref(),
        metrics.to_string().as_ref(),
    ]);
    assert!(status.success() && out.starts_with("healthy"), "{out}");
    assert_eq!(
        http_get(
            metrics,
            &format!("/eigen/node/services/performer-{AVS}/health")
        )
        .await
        .status,
        200
    );
    assert_eq!(
        http_get(metrics, "/eigen/node/services/nothing/health")
            .await
            .status,
        404
    );

    // Outcomes: every task of AVS signed, every task of FAILING_AVS failed by its performer.
    let fixture = node.fixture().clone();
    for _ in 0..5 {
        let task = fixture.task(AVS, Scheme::Ecdsa, b"score");
        node.submit(fixture.sign(Scheme::Ecdsa, &task))
            .await
            .unwrap();
        let task = fixture.task(FAILING_AVS, Scheme::Ecdsa, b"score");
        assert!(
            node.submit(fixture.sign(Scheme::Ecdsa, &task))
                .await
                .is_err()
        );
    }
    scrape_until(
        metrics,
        Duration::from_secs(10),
        "eigen_performance_score 100 for the AVS whose tasks are signed, 0 for the failing one",
        |s| {
            total(s, "eigen_performance_score", &[("avs_name", AVS)]) == Some(100.0)
                && total(s, "eigen_performance_score", &[("avs_name", FAILING_AVS)]) == Some(0.0)
        },
    )
    .await;

    // One performer killed: partially healthy until it is back.
    kill_performer(&node, MARKER);
    let deadline = Instant::now() + Duration::from_secs(30);
    let (mut seen_partial, mut seen_down) = (false, false);
    loop {
        let health = http_get(metrics, "/eigen/node/health").await.status;
        let service = http_get(
            metrics,
            &format!("/eigen/node/services/performer-{AVS}/health"),
        )
        .await
        .status;
        seen_down |= service != 200;
        match health {
            206 => seen_partial = true,
            200 if seen_partial && seen_down && service == 200 => break,
            200 => {}
            other => panic!("/eigen/node/health {other} while one of two performers restarts"),
        }
        assert!(
            Instant::now() < deadline,
            "health did not go 206 (seen: {seen_partial}) with the performer's service down \
             (seen: {seen_down}) and back to 200 within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A node whose only performer cannot be reached is unhealthy (503), and says which service.
#[tokio::test(flavor = "multi_thread")]
async fn the_eigen_node_api_is_unhealthy_with_no_performer_serving() {
    let node = TestNode::builder()
        .avs(
            AvsSpec::new(AVS)
                .performer_toml("runtime = \"remote\"\nendpoint = \"http://127.0.0.1:9\""),
        )
        .start();
    let _log = node.log_on_panic();
    let metrics = node.metrics_address();
    assert_eq!(http_get(metrics, "/eigen/node/health").await.status, 503);
    // What a container HEALTHCHECK runs.
    let (status, out, _) = crate::common::avsnode_cli(&[
        "healthcheck".as_ref(),
        "--metrics".as_ref(),
        metrics.to_string().as_ref(),
    ]);
    assert!(
        !status.success() && out.contains("not healthy: HTTP 503"),
        "{out}"
    );
    assert_eq!(
        http_get(
            metrics,
            &format!("/eigen/node/services/performer-{AVS}/health")
        )
        .await
        .status,
        503
    );
    let services = http_get(metrics, "/eigen/node/services").await.body;
    assert!(
        services.contains(&format!(r#""id":"performer-{AVS}""#))
            && services.contains(r#""status":"Down""#),
        "{services}"
    );
    assert!(services.contains(r#""id":"ledger","name":"sign-once ledger","description":"the embedded sign-once ledger","status":"Up""#), "{services}");
}
