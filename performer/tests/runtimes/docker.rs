//! The docker runtime against a real Docker Engine and `FROM scratch` images of the example
//! performer. Each test skips (or, on CI, fails) when no engine is reachable, and works in its own
//! node id and network, which it removes at the end even when it fails.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use avsnode_example_performer::square;
use avsnode_performer::{
    DockerPerformer, DockerRuntime, DockerSpec, ExecuteError, Hardening, HealthPolicy, Performer,
    PerformerState, PullPolicy, Resources, RestartPolicy, StartError,
};
use avsnode_proto::performer::TaskRequest;
use avsnode_tests::docker::{crashing_image, docker_available, docker_cli, example_image};
use serde_json::Value;

const TIMEOUT: Duration = Duration::from_secs(5);
/// Generous: containers start slower than processes, and CI machines are loaded.
const WITHIN: Duration = Duration::from_secs(20);

/// A test's own node id and network; removes every container labelled with the node id, and the
/// network, when dropped.
struct Sandbox {
    node_id: String,
    network: String,
    runtime: DockerRuntime,
}

impl Sandbox {
    async fn new(test: &str) -> Self {
        let pid = std::process::id();
        let sandbox = Self {
            node_id: format!("test-{test}-{pid}"),
            network: format!("avsnode-test-{test}-{pid}"),
            runtime: DockerRuntime::connect().await.unwrap(),
        };
        sandbox
            .runtime
            .ensure_network(&sandbox.network, &sandbox.node_id, false)
            .await
            .unwrap();
        sandbox
    }

    fn spec(&self, performer_id: &str, image: String) -> DockerSpec {
        DockerSpec {
            node_id: self.node_id.clone(),
            avs: "0x00000000000000000000000000000000000000aa".into(),
            performer_id: format!("{performer_id}-{}", std::process::id()),
            image,
            pull: PullPolicy::Never,
            auth: None,
            network: self.network.clone(),
            egress: true,
            port: 8080,
            env: vec![],
            hardening: Hardening::default(),
            resources: Resources {
                memory_bytes: Some(256 << 20),
                // A small CI runner may have one CPU; the engine refuses more than the host has.
                nano_cpus: Some(500_000_000),
                pids_limit: Some(64),
            },
            health: HealthPolicy {
                interval: Duration::from_millis(200),
                timeout: Duration::from_millis(500),
                startup_timeout: WITHIN,
                startup_poll: Duration::from_millis(50),
                failure_threshold: 3,
            },
            restart: RestartPolicy {
                initial_backoff: Duration::from_millis(50),
                max_backoff: Duration::from_millis(400),
                crash_loop_restarts: 5,
                crash_loop_window: Duration::from_secs(60),
            },
            log_lines_per_second: 50,
        }
    }

    /// Ids of this sandbox's containers carrying `label=value` (running or not).
    fn containers(&self, label: &str, value: &str) -> Vec<String> {
        docker_cli(&[
            "ps",
            "-aq",
            "--no-trunc",
            "--filter",
            &format!("label=io.avsnode.node={}", self.node_id),
            "--filter",
            &format!("label={label}={value}"),
        ])
        .lines()
        .map(str::to_owned)
        .collect()
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        // No asserts: a panic while the test unwinds would abort the whole run.
        let listed = Command::new("docker")
            .args(["ps", "-aq", "--filter"])
            .arg(format!("label=io.avsnode.node={}", self.node_id))
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

fn task(n: u64) -> TaskRequest {
    TaskRequest {
        task_id: format!("0x{n:064x}").into_bytes(),
        payload: n.to_be_bytes().to_vec(),
    }
}

/// Runs task `n` and checks the answer: the square, then `marker`'s bytes.
async fn assert_executes(performer: &dyn Performer, n: u64, marker: &str) {
    let request = task(n);
    let response = performer.execute(request.clone(), TIMEOUT).await.unwrap();
    assert_eq!(response.task_id, request.task_id);
    let mut expected = square(&request.payload).unwrap();
    expected.extend_from_slice(marker.as_bytes());
    assert_eq!(response.result, expected);
}

async fn wait_for(
    performer: &dyn Performer,
    within: Duration,
    done: impl Fn(PerformerState) -> bool,
) -> PerformerState {
    let deadline = Instant::now() + within;
    loop {
        let state = performer.state();
        if done(state) {
            return state;
        }
        assert!(Instant::now() < deadline, "still {state} after {within:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn inspect(id: &str) -> Value {
    let json: Value = serde_json::from_str(&docker_cli(&["inspect", id])).unwrap();
    json[0].clone()
}

#[tokio::test(flavor = "multi_thread")]
async fn docker_performer_is_hardened_private_and_serves() {
    if !docker_available() {
        return;
    }
    let sandbox = Sandbox::new("serve").await;
    let image = example_image(Some("blue"));
    let spec = sandbox.spec("serve", image.clone());
    let performer_id = spec.performer_id.clone();
    let performer = DockerPerformer::start(&sandbox.runtime, spec)
        .await
        .unwrap();

    assert_eq!(performer.state(), PerformerState::Healthy);
    assert_eq!(performer.runtime(), "docker");
    assert!(!performer.adopted());
    assert_eq!(performer.image(), image);
    assert!(
        performer.image_id().starts_with("sha256:"),
        "{}",
        performer.image_id()
    );
    assert!(performer.last_health_check().is_some());
    assert_executes(&performer, 7, "blue").await;

    let container = inspect(&performer.container_id());
    let host = &container["HostConfig"];
    assert_eq!(host["ReadonlyRootfs"], true);
    assert!(
        host["CapDrop"].as_array().unwrap().contains(&"ALL".into()),
        "{host}"
    );
    assert!(
        host["SecurityOpt"]
            .as_array()
            .unwrap()
            .contains(&"no-new-privileges:true".into()),
        "{host}"
    );
    assert_eq!(host["PidsLimit"], 64);
    assert_eq!(host["Memory"], 256 << 20);
    assert_eq!(host["NanoCpus"], 500_000_000);
    assert_eq!(host["RestartPolicy"]["Name"], "no");
    assert_eq!(host["PublishAllPorts"], false);
    assert!(
        host["PortBindings"]
            .as_object()
            .is_none_or(|b| b.is_empty()),
        "{host}"
    );
    assert!(
        host["Tmpfs"]["/tmp"].as_str().unwrap().contains("size="),
        "{host}"
    );
    assert_eq!(host["NetworkMode"], sandbox.network.as_str());
    // Exposed, never bound to a host port.
    for (port, bindings) in container["NetworkSettings"]["Ports"].as_object().unwrap() {
        assert!(
            bindings.as_array().is_none_or(|b| b.is_empty()),
            "{port} is published: {bindings}"
        );
    }
    let labels = &container["Config"]["Labels"];
    assert_eq!(labels["io.avsnode.node"], sandbox.node_id.as_str());
    assert_eq!(
        labels["io.avsnode.avs"],
        "0x00000000000000000000000000000000000000aa"
    );
    assert_eq!(labels["io.avsnode.performer"], performer_id.as_str());
    assert_eq!(labels["io.avsnode.image"], image.as_str());
    assert_eq!(labels["io.avsnode.image-id"], performer.image_id().as_str());
    assert_eq!(labels["io.avsnode.spec"].as_str().unwrap().len(), 64);
    assert!(
        container["Config"]["Env"]
            .as_array()
            .unwrap()
            .contains(&"PORT=8080".into())
    );
    assert_eq!(
        container["Name"],
        format!("/avsnode-{performer_id}").as_str()
    );
    let address = container["NetworkSettings"]["Networks"][&sandbox.network]["IPAddress"]
        .as_str()
        .unwrap();
    assert_eq!(performer.endpoint(), format!("http://{address}:8080"));

    let owned = sandbox
        .runtime
        .owned_containers(&sandbox.node_id)
        .await
        .unwrap();
    assert_eq!(owned.len(), 1, "{owned:?}");
    assert_eq!(owned[0].id, performer.container_id());
    assert_eq!(owned[0].performer_id, performer_id);
    assert_eq!(owned[0].name, format!("avsnode-{performer_id}"));
    assert_eq!(owned[0].image, image);
    assert!(owned[0].running);

    performer.remove().await;
    assert_eq!(performer.state(), PerformerState::Failed);
    assert!(
        sandbox
            .containers("io.avsnode.performer", &performer_id)
            .is_empty()
    );
    // Idempotent: removing what is gone is fine.
    sandbox
        .runtime
        .remove_container(&performer.container_id())
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn killed_container_is_restarted() {
    if !docker_available() {
        return;
    }
    let sandbox = Sandbox::new("kill").await;
    let spec = sandbox.spec("kill", example_image(None));
    let performer = DockerPerformer::start(&sandbox.runtime, spec)
        .await
        .unwrap();
    let container = performer.container_id();
    docker_cli(&["kill", &container]);

    wait_for(&performer, WITHIN, |s| s != PerformerState::Healthy).await;
    let started = Instant::now();
    let result = performer.execute(task(3), TIMEOUT).await;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert!(
        matches!(result, Err(ExecuteError::Unavailable(_))),
        "{result:?}"
    );

    wait_for(&performer, WITHIN, |s| s == PerformerState::Healthy).await;
    assert_eq!(performer.restarts(), 1);
    // The same container, started again.
    assert_eq!(performer.container_id(), container);
    assert_executes(&performer, 42, "").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn crashing_containers_are_not_restarted_forever() {
    if !docker_available() {
        return;
    }
    let sandbox = Sandbox::new("crash").await;
    let restart = RestartPolicy {
        initial_backoff: Duration::from_millis(50),
        max_backoff: Duration::from_millis(400),
        crash_loop_restarts: 2,
        crash_loop_window: Duration::from_secs(60),
    };

    // Exits before serving: start fails, leaving nothing behind.
    let mut spec = sandbox.spec("crash-at-start", crashing_image());
    spec.restart = restart.clone();
    spec.health.startup_timeout = Duration::from_secs(5);
    let performer_id = spec.performer_id.clone();
    let err = DockerPerformer::start(&sandbox.runtime, spec)
        .await
        .unwrap_err();
    assert!(matches!(err, StartError::ContainerExited { .. }), "{err:?}");
    assert!(err.to_string().contains("exit code 1"), "{err}");
    assert!(
        sandbox
            .containers("io.avsnode.performer", &performer_id)
            .is_empty()
    );

    // Serves one task, then exits, every time: a crash loop once running.
    let mut spec = sandbox.spec("crash-loop", example_image(None));
    spec.restart = restart;
    spec.env = vec![("AVSNODE_EXAMPLE_EXIT_AFTER".into(), "1".into())];
    let performer_id = spec.performer_id.clone();
    let performer = DockerPerformer::start(&sandbox.runtime, spec)
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while performer.state() != PerformerState::Failed {
        assert!(Instant::now() < deadline, "still {}", performer.state());
        let _ = performer.execute(task(5), TIMEOUT).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(performer.restarts(), 2);

    let started = Instant::now();
    let result = performer.execute(task(5), TIMEOUT).await;
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    assert!(
        matches!(result, Err(ExecuteError::Unavailable(_))),
        "{result:?}"
    );
    // Failed is final, and the container stays (stopped) for its logs.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(performer.state(), PerformerState::Failed);
    assert_eq!(performer.restarts(), 2);
    let containers = sandbox.containers("io.avsnode.performer", &performer_id);
    assert_eq!(containers.len(), 1);
    assert_eq!(inspect(&containers[0])["State"]["Running"], false);
}

#[tokio::test(flavor = "multi_thread")]
async fn pull_policy_never_needs_a_local_image() {
    if !docker_available() {
        return;
    }
    let sandbox = Sandbox::new("never").await;
    let image = format!("avsnode-test-missing:{}", std::process::id());
    let spec = sandbox.spec("never", image.clone());
    let err = DockerPerformer::start(&sandbox.runtime, spec)
        .await
        .unwrap_err();
    assert!(matches!(err, StartError::ImageMissing { .. }), "{err:?}");
    let message = err.to_string();
    assert!(message.contains(&image), "{message}");
    assert!(message.contains("not present locally"), "{message}");
    assert!(message.contains("pull policy is never"), "{message}");
}

#[tokio::test(flavor = "multi_thread")]
async fn unchanged_running_container_is_adopted() {
    if !docker_available() {
        return;
    }
    let sandbox = Sandbox::new("adopt").await;
    let mut spec = sandbox.spec("adopt", example_image(None));
    spec.env = vec![("GREETING".into(), "hello".into())];
    let performer_id = spec.performer_id.clone();

    let first = DockerPerformer::start(&sandbox.runtime, spec.clone())
        .await
        .unwrap();
    let container = first.container_id();
    first.shutdown().await;
    assert_eq!(first.state(), PerformerState::Failed);
    assert_eq!(inspect(&container)["State"]["Running"], true);

    let second = DockerPerformer::start(&sandbox.runtime, spec.clone())
        .await
        .unwrap();
    assert!(second.adopted());
    assert_eq!(second.container_id(), container);
    assert_eq!(
        sandbox.containers("io.avsnode.performer", &performer_id),
        vec![container.clone()]
    );
    assert_executes(&second, 9, "").await;
    second.shutdown().await;

    // A changed spec replaces the container.
    spec.env[0].1 = "goodbye".into();
    let third = DockerPerformer::start(&sandbox.runtime, spec)
        .await
        .unwrap();
    assert!(!third.adopted());
    assert_ne!(third.container_id(), container);
    assert_eq!(
        sandbox.containers("io.avsnode.performer", &performer_id),
        vec![third.container_id()]
    );
    assert_eq!(inspect(&third.container_id())["State"]["Running"], true);
    assert_executes(&third, 10, "").await;
    third.remove().await;
    assert!(
        sandbox
            .containers("io.avsnode.performer", &performer_id)
            .is_empty()
    );
}

/// Collects everything a `fmt` subscriber writes.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// Everything logged in this test process from the first call on: a global subscriber, since a
/// thread-local one misses events when other tests' threads register the same callsites first.
fn captured() -> &'static Captured {
    static CAPTURED: std::sync::OnceLock<Captured> = std::sync::OnceLock::new();
    CAPTURED.get_or_init(|| {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .with_max_level(tracing::Level::INFO)
            .finish();
        tracing::subscriber::set_global_default(subscriber).unwrap();
        captured
    })
}

#[tokio::test]
async fn container_output_reaches_the_log() {
    if !docker_available() {
        return;
    }
    let captured = captured();

    let sandbox = Sandbox::new("logs").await;
    let mut spec = sandbox.spec("logs", example_image(None));
    spec.env = vec![("API_TOKEN".into(), "do-not-log-this-value".into())];
    let performer_id = spec.performer_id.clone();
    let performer = DockerPerformer::start(&sandbox.runtime, spec)
        .await
        .unwrap();

    // The example performer says where it listens, on stderr, once it starts.
    let deadline = Instant::now() + WITHIN;
    let line = loop {
        let text = captured.text();
        if let Some(line) = text.lines().find(|l| {
            l.contains("example performer listening on")
                && l.contains(&format!("performer={performer_id}"))
        }) {
            break line.to_owned();
        }
        assert!(Instant::now() < deadline, "no performer output in:\n{text}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(
        line.contains(&format!("performer={performer_id}")),
        "{line}"
    );
    assert!(line.contains("stderr") && line.contains("WARN"), "{line}");
    performer.remove().await;
    let text = captured.text();
    assert!(!text.contains("do-not-log-this-value"), "{text}");
}
