//! Floods that lock honest clients out if the node lets them (issue 14, §2), and an honest client
//! that measures what it still gets: raw sockets held open from another loopback address (a
//! source the node can tell apart from the honest client's 127.0.0.1), and gRPC channels made
//! from a chosen source address.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::net::TcpSocket;
use tonic::transport::{Channel, Endpoint};

/// The attackers' source address: loopback, but not the honest client's 127.0.0.1.
pub const ATTACKER: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 2));

/// What a [`SocketFlood`] did.
#[derive(Debug, Default)]
pub struct FloodCounts {
    /// Connections made.
    pub connected: AtomicU64,
    /// Connections the node closed.
    pub closed: AtomicU64,
    /// Connections the node reset (refused), or attempts that made none.
    pub failed: AtomicU64,
}

/// `n` TCP connections to `target` from `source`, each sending `bytes` once and then nothing
/// (no bytes: a TLS client that never sends its ClientHello; 12 bytes: half an HTTP/2 preface).
/// A connection the node closes is opened again at once, so the node always faces `n`. The
/// flood is the `avsnode-flood` process at nice 19, as if from another machine: inside the test
/// process it took a core of this two-core machine from the node it attacked. Stops when
/// dropped.
pub struct SocketFlood {
    child: std::process::Child,
    /// What happened so far (updated every 100 ms).
    pub counts: Arc<FloodCounts>,
}

impl SocketFlood {
    pub fn start(
        target: SocketAddr,
        source: IpAddr,
        n: usize,
        bytes: &'static [u8],
    ) -> SocketFlood {
        use std::io::BufRead as _;
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        let mut child = std::process::Command::new("nice")
            .args(["-n", "19"])
            .arg(avsnode_tests::binary("avsnode-flood"))
            .args([target.to_string(), source.to_string(), n.to_string(), hex])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let counts = Arc::new(FloodCounts::default());
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn({
            let counts = counts.clone();
            move || {
                for line in std::io::BufReader::new(stdout).lines() {
                    let Ok(line) = line else { return };
                    let numbers: Vec<u64> =
                        line.split(' ').filter_map(|n| n.parse().ok()).collect();
                    if let [connected, closed, failed] = numbers[..] {
                        counts.connected.store(connected, Ordering::Relaxed);
                        counts.closed.store(closed, Ordering::Relaxed);
                        counts.failed.store(failed, Ordering::Relaxed);
                    }
                }
            }
        });
        SocketFlood { child, counts }
    }

    /// Waits until `n` connections were made at least once (the flood is in place).
    pub async fn wait_connected(&self, n: u64) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.counts.connected.load(Ordering::Relaxed) < n {
            assert!(
                Instant::now() < deadline,
                "the flood never got {n} connections"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for SocketFlood {
    fn drop(&mut self) {
        // Closing its standard input ends it; kill is the fallback.
        drop(self.child.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.child.try_wait().ok().flatten().is_none() {
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// A gRPC channel to `target` whose connection comes from `source`.
pub async fn channel_from(
    source: IpAddr,
    target: SocketAddr,
) -> Result<Channel, tonic::transport::Error> {
    Endpoint::from_shared(format!("http://{target}"))
        .unwrap()
        .connect_timeout(Duration::from_secs(20))
        .connect_with_connector(tower::service_fn(move |_| async move {
            let socket = TcpSocket::new_v4()?;
            socket.bind(SocketAddr::new(source, 0))?;
            let stream = socket.connect(target).await?;
            Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
        }))
        .await
}

/// What an honest client got: how many of its tasks were signed, why the others were not, and
/// the latency of each signed one (connect, submit, answer).
#[derive(Debug, Default)]
pub struct Honest {
    pub sent: usize,
    pub signed: usize,
    pub failures: Vec<String>,
    pub latencies: Vec<Duration>,
}

impl Honest {
    /// Runs `tasks` attempts, `concurrency` at a time; `attempt(i)` makes a fresh connection,
    /// submits task `i` and checks its answer.
    pub async fn run<F, Fut>(tasks: usize, concurrency: usize, attempt: F) -> Honest
    where
        F: Fn(usize) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Result<(), String>> + Send,
    {
        let attempt = Arc::new(attempt);
        let next = Arc::new(AtomicU64::new(0));
        let workers: Vec<_> = (0..concurrency)
            .map(|_| {
                let attempt = attempt.clone();
                let next = next.clone();
                tokio::spawn(async move {
                    let mut out = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                        if i >= tasks {
                            return out;
                        }
                        let started = Instant::now();
                        let outcome = tokio::time::timeout(Duration::from_secs(30), attempt(i))
                            .await
                            .unwrap_or_else(|_| Err("no answer within 30 s".into()));
                        out.push((outcome, started.elapsed()));
                    }
                })
            })
            .collect();
        let mut honest = Honest::default();
        for worker in workers {
            for (outcome, took) in worker.await.unwrap() {
                honest.sent += 1;
                match outcome {
                    Ok(()) => {
                        honest.signed += 1;
                        honest.latencies.push(took);
                    }
                    Err(why) => honest.failures.push(why),
                }
            }
        }
        honest.latencies.sort();
        honest
    }

    /// The `p`-quantile of the signed tasks' latencies (0 if none).
    pub fn percentile(&self, p: f64) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        let i = ((self.latencies.len() as f64 * p).ceil() as usize).clamp(1, self.latencies.len());
        self.latencies[i - 1]
    }

    /// The share of tasks signed.
    pub fn signed_share(&self) -> f64 {
        self.signed as f64 / self.sent.max(1) as f64
    }

    /// One line for the test's output.
    pub fn summary(&self, what: &str) -> String {
        format!(
            "{what}: {}/{} signed ({:.1} %), p50 {:.1} ms, p99 {:.1} ms{}",
            self.signed,
            self.sent,
            self.signed_share() * 100.0,
            self.percentile(0.5).as_secs_f64() * 1e3,
            self.percentile(0.99).as_secs_f64() * 1e3,
            match self.failures.first() {
                Some(first) => format!("; first failure: {first}"),
                None => String::new(),
            }
        )
    }
}

/// Tasks one honest-client phase sends: 150, or 2,000 with `AVSNODE_MEASURE` set.
pub fn honest_tasks() -> usize {
    if std::env::var_os("AVSNODE_MEASURE").is_some() {
        2000
    } else {
        150
    }
}

/// `n` honest ECDSA tasks for [`super::AVS`], each over a fresh plaintext connection from
/// 127.0.0.1, four at a time; every answer verified.
pub async fn honest_over_fresh_connections(node: &super::TestNode, n: usize) -> Honest {
    use avsnode_proto::executor::executor_service_client::ExecutorServiceClient;
    let url = node.url();
    let fixture = node.fixture().clone();
    Honest::run(n, 4, move |i| {
        let (url, fixture) = (url.clone(), fixture.clone());
        async move {
            let mut client = ExecutorServiceClient::connect(url)
                .await
                .map_err(|e| format!("connect: {e}"))?;
            let scheme = avsnode_signer::Scheme::Ecdsa;
            let task = fixture.task(super::AVS, scheme, &[(i % 200) as u8, 1]);
            let result = client
                .submit_task(fixture.sign(scheme, &task))
                .await
                .map_err(|s| format!("{s:?}"))?
                .into_inner();
            fixture.verify(&result, &task)
        }
    })
    .await
}

/// Resident memory of process `pid`, in bytes.
pub fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kib * 1024
}
