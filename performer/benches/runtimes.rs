//! Task latency of the docker runtime against the process runtime: one sequential `execute` round
//! trip (8-byte payload) on the same example performer, started as a local process and as a
//! container of a `FROM scratch` image on a private bridge network, both with default options.
//! The target: the container path adds under 1 ms at p50. Results in docs/PERFORMANCE.md.
//!
//! Run with `cargo bench -p avsnode-performer --bench runtimes -- --warm-up-time 1
//! --measurement-time 5`. Criterion reports the mean and median time per round trip (group
//! `execute`, functions `process` and `docker`); afterwards a plain loop of 5,000 timed round
//! trips per runtime (interleaved in blocks) prints p50 and p99 and their differences. Without a
//! reachable Docker Engine only the process runtime is measured. Under `cargo test --benches`
//! criterion runs each function once and the plain loop is skipped.

#![allow(clippy::unwrap_used, clippy::print_stdout, clippy::print_stderr)] // a bench: panics and prints are its report

use std::hint::black_box;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use avsnode_performer::{
    DockerPerformer, DockerRuntime, DockerSpec, Hardening, HealthPolicy, Performer,
    ProcessPerformer, ProcessSpec, PullPolicy, Resources, RestartPolicy,
};
use avsnode_proto::performer::TaskRequest;
use avsnode_tests::docker::{docker_available, example_image};
use criterion::{BatchSize, Criterion};
use tokio::runtime::Runtime;

const AVS: &str = "0x00000000000000000000000000000000000000aa";
const TIMEOUT: Duration = Duration::from_secs(5);
/// Round trips per runtime before anything is measured (connections, caches, the CPU governor).
const WARM_UP: usize = 1_000;
/// Round trips per runtime in the plain p50/p99 loop.
const SAMPLES: usize = 5_000;
/// The plain loop alternates runtimes in blocks of this many, so that a noisy spell on the
/// shared machine hits both rather than one.
const BLOCK: usize = 500;

/// A task as the node sends it: the task id is the ASCII of its 66-character `0x` hex form.
fn task() -> TaskRequest {
    TaskRequest {
        task_id: format!("0x{:064x}", 0x0123_4567_89ab_cdef_u64).into_bytes(),
        payload: 12_345_u64.to_be_bytes().to_vec(),
    }
}

/// This run's node id and network; removes every container labelled with the node id, and the
/// network, when dropped (also when the bench panics).
struct Sandbox {
    node_id: String,
    network: String,
}

impl Sandbox {
    fn new() -> Self {
        let pid = std::process::id();
        Self {
            node_id: format!("bench-runtimes-{pid}"),
            network: format!("avsnode-bench-runtimes-{pid}"),
        }
    }

    /// The node's docker defaults, with the example image (never pulled: it is built locally).
    fn spec(&self, image: String) -> DockerSpec {
        DockerSpec {
            node_id: self.node_id.clone(),
            avs: AVS.into(),
            performer_id: format!("bench-{}", std::process::id()),
            image,
            pull: PullPolicy::Never,
            auth: None,
            network: self.network.clone(),
            egress: true,
            port: 8080,
            env: vec![],
            hardening: Hardening::default(),
            resources: Resources::default(),
            health: HealthPolicy::default(),
            restart: RestartPolicy::default(),
            log_lines_per_second: 50,
        }
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        // No panics here: one while unwinding would abort.
        let listed = Command::new("docker")
            .args(["ps", "-aq", "--filter"])
            .arg(format!("label=io.avsnode.node={}", self.node_id))
            .stderr(Stdio::null())
            .output();
        if let Ok(listed) = listed {
            let ids = String::from_utf8_lossy(&listed.stdout).into_owned();
            let ids: Vec<&str> = ids.lines().collect();
            if !ids.is_empty() {
                let _ = Command::new("docker")
                    .args(["rm", "-f", "-v"])
                    .args(&ids)
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status();
            }
        }
        let _ = Command::new("docker")
            .args(["network", "rm", &self.network])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

async fn start_docker(sandbox: &Sandbox) -> DockerPerformer {
    let image = example_image(None);
    let runtime = DockerRuntime::connect().await.unwrap();
    runtime
        .ensure_network(&sandbox.network, &sandbox.node_id, false)
        .await
        .unwrap();
    DockerPerformer::start(&runtime, sandbox.spec(image))
        .await
        .unwrap()
}

/// Runs `count` round trips, checking the first answer.
async fn warm_up(performer: &dyn Performer, count: usize) {
    let request = task();
    let response = performer.execute(request.clone(), TIMEOUT).await.unwrap();
    assert_eq!(response.task_id, request.task_id);
    assert_eq!(
        response.result,
        avsnode_example_performer::square(&request.payload).unwrap()
    );
    for _ in 1..count {
        performer.execute(request.clone(), TIMEOUT).await.unwrap();
    }
}

/// Appends the latency of each of `count` sequential round trips to `into`.
async fn time_round_trips(performer: &dyn Performer, count: usize, into: &mut Vec<Duration>) {
    let request = task();
    for _ in 0..count {
        let request = request.clone();
        let started = Instant::now();
        let response = performer.execute(request, TIMEOUT).await.unwrap();
        into.push(started.elapsed());
        black_box(response);
    }
}

/// The nearest-rank percentile of sorted latencies.
fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = (p / 100.0 * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn bench(criterion: &mut Criterion, runtime: &Runtime, performers: &[(&str, &dyn Performer)]) {
    let mut group = criterion.benchmark_group("execute");
    for &(name, performer) in performers {
        group.bench_function(name, |b| {
            b.iter_batched(
                task,
                |request| {
                    runtime
                        .block_on(performer.execute(request, TIMEOUT))
                        .unwrap()
                },
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

/// The plain loop: `SAMPLES` timed round trips per runtime, interleaved in blocks; prints p50 and
/// p99 of each and the differences from the first (the process runtime).
fn report(runtime: &Runtime, performers: &[(&str, &dyn Performer)]) {
    let mut latencies = vec![Vec::with_capacity(SAMPLES); performers.len()];
    runtime.block_on(async {
        for _ in 0..SAMPLES / BLOCK {
            for (&(_, performer), into) in performers.iter().zip(&mut latencies) {
                time_round_trips(performer, BLOCK, into).await;
            }
        }
    });
    println!();
    println!(
        "sequential execute round trips, {SAMPLES} per runtime (interleaved blocks of {BLOCK}):"
    );
    let mut baseline = None;
    for (&(name, _), latencies) in performers.iter().zip(&mut latencies) {
        latencies.sort_unstable();
        let (p50, p99) = (percentile(latencies, 50.0), percentile(latencies, 99.0));
        print!(
            "  {name:<8} p50 {:8.1} µs   p99 {:8.1} µs",
            micros(p50),
            micros(p99)
        );
        match baseline {
            None => baseline = Some((p50, p99)),
            Some((base50, base99)) => print!(
                "   difference: p50 {:+8.1} µs   p99 {:+8.1} µs",
                micros(p50) - micros(base50),
                micros(p99) - micros(base99)
            ),
        }
        println!();
    }
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` does not (criterion's test mode).
    let benchmarking = std::env::args().any(|arg| arg == "--bench");
    let mut criterion = Criterion::default().configure_from_args();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();

    let process = runtime
        .block_on(ProcessPerformer::start(ProcessSpec {
            name: AVS.into(),
            program: avsnode_tests::binary("avsnode-example-performer"),
            args: vec![],
            env: vec![],
            port: 0,
            health: HealthPolicy::default(),
            restart: RestartPolicy::default(),
        }))
        .unwrap();
    let sandbox = Sandbox::new();
    let docker = if docker_available() {
        Some(runtime.block_on(start_docker(&sandbox)))
    } else {
        eprintln!("docker runtime not measured: no Docker Engine reachable (see above)");
        None
    };

    let mut performers: Vec<(&str, &dyn Performer)> = vec![("process", &process)];
    if let Some(docker) = &docker {
        performers.push(("docker", docker));
    }
    let warm_up_count = if benchmarking { WARM_UP } else { 1 };
    runtime.block_on(async {
        for &(_, performer) in &performers {
            warm_up(performer, warm_up_count).await;
        }
    });

    bench(&mut criterion, &runtime, &performers);
    if benchmarking {
        report(&runtime, &performers);
    }
    criterion.final_summary();

    runtime.block_on(async {
        process.shutdown().await;
        if let Some(docker) = &docker {
            docker.remove().await;
        }
    });
    drop(sandbox);
}
