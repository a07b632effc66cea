//! The process and remote runtimes against the real example performer, over real sockets.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use avsnode_example_performer::square;
use avsnode_performer::{
    ExecuteError, HealthPolicy, Performer, PerformerState, ProcessPerformer, ProcessSpec,
    RemotePerformer, RemoteSpec, RestartPolicy, StartError,
};
use avsnode_proto::performer::TaskRequest;
use tokio::process::{Child, Command};

const TIMEOUT: Duration = Duration::from_secs(5);

fn example() -> PathBuf {
    avsnode_tests::binary("avsnode-example-performer")
}

fn health() -> HealthPolicy {
    HealthPolicy {
        interval: Duration::from_millis(100),
        timeout: Duration::from_millis(500),
        startup_timeout: Duration::from_secs(10),
        startup_poll: Duration::from_millis(20),
        failure_threshold: 3,
    }
}

fn spec(args: &[&str]) -> ProcessSpec {
    ProcessSpec {
        name: "0x00000000000000000000000000000000000000aa".into(),
        program: example(),
        args: args.iter().map(|a| a.to_string()).collect(),
        env: vec![],
        port: 0,
        health: health(),
        restart: RestartPolicy {
            initial_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_millis(400),
            crash_loop_restarts: 5,
            crash_loop_window: Duration::from_secs(30),
        },
    }
}

/// A task as the node sends it: the task id is the ASCII of its 66-character hex form.
fn task(n: u64) -> TaskRequest {
    TaskRequest {
        task_id: format!("0x{n:064x}").into_bytes(),
        payload: n.to_be_bytes().to_vec(),
    }
}

/// Polls until `done(state)`, failing the test after `within`.
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
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn assert_executes(performer: &dyn Performer, n: u64) {
    let request = task(n);
    let response = performer.execute(request.clone(), TIMEOUT).await.unwrap();
    assert_eq!(response.task_id, request.task_id);
    assert_eq!(response.result, square(&request.payload).unwrap());
}

fn signal(pid: u32, signal: &str) {
    let status = std::process::Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill {signal} {pid}");
}

fn process_exists(pid: u32) -> bool {
    std::process::Command::new("kill")
        .args(["-0", &pid.to_string()])
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap()
        .success()
}

#[tokio::test(flavor = "multi_thread")]
async fn process_executes_tasks_concurrently_and_shuts_down() {
    // Each task takes 100 ms: 200 of them serialised would take 20 s.
    let performer = Arc::new(
        ProcessPerformer::start(spec(&["--delay-ms", "100"]))
            .await
            .unwrap(),
    );
    assert_eq!(performer.state(), PerformerState::Healthy);
    assert!(performer.endpoint().starts_with("http://127.0.0.1:"));
    assert_executes(&*performer, 3).await;

    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..200u64 {
        let performer = performer.clone();
        tasks.spawn(async move { assert_executes(&*performer, n << 32 | 7).await });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "200 concurrent tasks took {:?}",
        started.elapsed()
    );

    let pid = performer.pid().unwrap();
    performer.shutdown().await;
    assert_eq!(performer.state(), PerformerState::Failed);
    assert!(matches!(
        performer.execute(task(1), TIMEOUT).await,
        Err(ExecuteError::Unavailable(_))
    ));
    let deadline = Instant::now() + TIMEOUT;
    while process_exists(pid) {
        assert!(Instant::now() < deadline, "process {pid} outlived shutdown");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn process_that_never_serves_fails_to_start() {
    let mut spec = spec(&["--not-serving"]);
    spec.health.startup_timeout = Duration::from_millis(500);
    let err = ProcessPerformer::start(spec).await.unwrap_err();
    assert!(matches!(err, StartError::NeverHealthy { .. }), "{err:?}");
    assert!(err.to_string().contains("never became healthy"), "{err}");
    let source = std::error::Error::source(&err).unwrap().to_string();
    assert!(source.contains("NOT_SERVING"), "{source}");
}

#[tokio::test(flavor = "multi_thread")]
async fn process_that_exits_fails_to_start() {
    // clap rejects the option and exits with code 2.
    let err = ProcessPerformer::start(spec(&["--fail-rate", "2"]))
        .await
        .unwrap_err();
    assert!(matches!(err, StartError::Exited { .. }), "{err:?}");
    assert!(err.to_string().contains("exit status: 2"), "{err}");

    let mut missing = spec(&[]);
    missing.program = "/nonexistent/performer".into();
    let err = ProcessPerformer::start(missing).await.unwrap_err();
    assert!(matches!(err, StartError::Spawn { .. }), "{err:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn killed_process_is_restarted() {
    let performer = ProcessPerformer::start(spec(&[])).await.unwrap();
    let pid = performer.pid().unwrap();
    signal(pid, "-KILL");

    wait_for(&performer, TIMEOUT, |s| s != PerformerState::Healthy).await;
    wait_for(&performer, TIMEOUT, |s| s == PerformerState::Healthy).await;
    assert_eq!(performer.restarts(), 1);
    assert_ne!(performer.pid(), Some(pid));
    assert_executes(&performer, 42).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn hung_process_is_killed_and_restarted() {
    let mut spec = spec(&[]);
    spec.health.timeout = Duration::from_millis(200);
    let performer = ProcessPerformer::start(spec).await.unwrap();
    let pid = performer.pid().unwrap();
    // Stopped, the process keeps its socket but answers nothing: only health checks notice.
    signal(pid, "-STOP");

    let state = wait_for(&performer, TIMEOUT, |s| s != PerformerState::Healthy).await;
    assert!(
        matches!(
            state,
            PerformerState::Unhealthy | PerformerState::Restarting
        ),
        "{state}"
    );
    wait_for(&performer, TIMEOUT, |s| s == PerformerState::Healthy).await;
    assert_eq!(performer.restarts(), 1);
    assert!(!process_exists(pid), "the hung process was not killed");
    assert_executes(&performer, 11).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn crash_loop_ends_failed() {
    let mut spec = spec(&["--exit-after", "1"]);
    spec.restart.crash_loop_restarts = 3;
    let performer = ProcessPerformer::start(spec).await.unwrap();

    // Every process answers one task and exits; keep the tasks coming until the node gives up.
    let deadline = Instant::now() + Duration::from_secs(20);
    while performer.state() != PerformerState::Failed {
        assert!(Instant::now() < deadline, "still {}", performer.state());
        let _ = performer.execute(task(5), TIMEOUT).await;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(performer.restarts(), 3);

    // Fails fast instead of waiting for the 5 s timeout; the bound leaves room for a loaded CI
    // machine while still telling "at once" from "at the deadline".
    let started = Instant::now();
    let result = performer.execute(task(5), TIMEOUT).await;
    assert!(started.elapsed() < TIMEOUT / 5, "{:?}", started.elapsed());
    assert!(
        matches!(result, Err(ExecuteError::Unavailable(_))),
        "{result:?}"
    );
    // Failed is final: nothing restarts it.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(performer.state(), PerformerState::Failed);
    assert_eq!(performer.restarts(), 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn slow_and_failing_performers() {
    let slow = ProcessPerformer::start(spec(&["--delay-ms", "500"]))
        .await
        .unwrap();
    let started = Instant::now();
    let result = slow.execute(task(2), Duration::from_millis(100)).await;
    assert!(
        matches!(result, Err(ExecuteError::DeadlineExceeded)),
        "{result:?}"
    );
    assert!(
        started.elapsed() < Duration::from_millis(400),
        "{:?}",
        started.elapsed()
    );

    let failing = ProcessPerformer::start(spec(&["--fail-rate", "1"]))
        .await
        .unwrap();
    match failing.execute(task(2), TIMEOUT).await {
        Err(ExecuteError::Status(status)) => assert_eq!(status.code(), tonic::Code::Internal),
        other => panic!("expected INTERNAL, got {other:?}"),
    }

    let mut bad_payload = task(2);
    bad_payload.payload = vec![1; 9];
    match slow.execute(bad_payload, TIMEOUT).await {
        Err(ExecuteError::Status(status)) => {
            assert_eq!(status.code(), tonic::Code::InvalidArgument);
            assert!(status.message().contains("at most 8 bytes"), "{status:?}");
        }
        other => panic!("expected INVALID_ARGUMENT, got {other:?}"),
    }
}

fn run_example(port: u16) -> Child {
    Command::new(example())
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn remote_is_health_checked_never_restarted() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut server = run_example(port);
    let performer = RemotePerformer::connect(RemoteSpec {
        endpoint: format!("http://127.0.0.1:{port}"),
        health: health(),
    })
    .await
    .unwrap();
    wait_for(&performer, TIMEOUT, |s| s == PerformerState::Healthy).await;
    assert_executes(&performer, 9).await;

    server.kill().await.unwrap();
    let state = wait_for(&performer, TIMEOUT, |s| s != PerformerState::Healthy).await;
    assert_eq!(state, PerformerState::Unhealthy);
    let result = performer.execute(task(9), TIMEOUT).await;
    assert!(
        matches!(result, Err(ExecuteError::Unavailable(_))),
        "{result:?}"
    );

    let _server = run_example(port);
    wait_for(&performer, TIMEOUT, |s| s == PerformerState::Healthy).await;
    assert_executes(&performer, 10).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn remote_endpoint_must_be_a_url() {
    for endpoint in ["not a url", "127.0.0.1:8080", "ftp://host:1"] {
        let err = RemotePerformer::connect(RemoteSpec {
            endpoint: endpoint.into(),
            health: health(),
        })
        .await
        .unwrap_err();
        assert!(
            matches!(err, StartError::InvalidEndpoint { .. }),
            "{endpoint}: {err:?}"
        );
    }

    // Down at start is not an error.
    let down = RemotePerformer::connect(RemoteSpec {
        endpoint: "http://127.0.0.1:1".into(),
        health: health(),
    })
    .await
    .unwrap();
    assert_eq!(down.state(), PerformerState::Unhealthy);
}
