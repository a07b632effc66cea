//! Docker performers end to end, against the real Docker Engine: the real `avsnode run` with
//! `runtime = "docker"` AVSs, the example performer as a static binary in `FROM scratch` images
//! (built once per test run by `avsnode_tests::docker`), deploys through the management API.
//!
//! Every test uses its own node id, so its containers and network are its own; a guard removes
//! them at the end, whatever happened. Without a Docker Engine these tests print why and pass,
//! except under `CI=true`, where that is a failure.

#![allow(clippy::unwrap_used, clippy::print_stderr)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::common::{AVS, Fixture, TestNode};
use avsnode::management::AdminClient;
use avsnode_aggregator::NewTask;
use avsnode_proto::executor::TaskResult;
use avsnode_signer::Scheme;
use avsnode_signer::ecdsa;
use avsnode_signing::LocalKey;
use avsnode_tests::docker::{crashing_image, docker_available, docker_cli, example_image};
use tonic::Code;

const OTHER_AVS: &str = "0x000000000000000000000000000000000000b6b6";

/// Removes a test's containers and network, however the test ends.
struct Cleanup(String);

impl Cleanup {
    fn new(test: &str) -> Cleanup {
        Cleanup(format!("t-{test}-{}", std::process::id()))
    }

    fn node_id(&self) -> &str {
        &self.0
    }

    /// The ids of this node's containers (running or not) of `avs`, if given.
    fn containers(&self, avs: Option<&str>, all: bool) -> Vec<String> {
        let mut args = vec![
            "ps".to_owned(),
            "-q".into(),
            "--no-trunc".into(),
            "--filter".into(),
            format!("label=io.avsnode.node={}", self.0),
        ];
        if all {
            args.push("-a".into());
        }
        if let Some(avs) = avs {
            args.push("--filter".into());
            args.push(format!("label=io.avsnode.avs={avs}"));
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        docker_cli(&args)
            .lines()
            .map(str::to_owned)
            .filter(|l| !l.is_empty())
            .collect()
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let ids = std::process::Command::new("docker")
            .args(["ps", "-aq", "--filter"])
            .arg(format!("label=io.avsnode.node={}", self.0))
            .output();
        if let Ok(out) = ids {
            let ids = String::from_utf8_lossy(&out.stdout);
            for id in ids.lines().filter(|l| !l.is_empty()) {
                let _ = std::process::Command::new("docker")
                    .args(["rm", "-f", id])
                    .output();
            }
        }
        for network in [
            format!("avsnode-{}", self.0),
            format!("avsnode-{}-internal", self.0),
        ] {
            let _ = std::process::Command::new("docker")
                .args(["network", "rm"])
                .arg(network)
                .output();
        }
    }
}

/// An admin key and the `[management]` table that lists it.
fn admin() -> (ecdsa::SecretKey, String) {
    let LocalKey::Ecdsa(key) = LocalKey::generate(Scheme::Ecdsa) else {
        unreachable!("generated an ECDSA key")
    };
    let toml = format!(
        "[management]\nlisten = \"127.0.0.1:0\"\nadmins = [\"{}\"]\n",
        key.public_key().address()
    );
    (key, toml)
}

/// `[avs.performer]` for a docker performer, with fast restarts for tests.
fn docker_performer(image: Option<&str>, extra: &str) -> String {
    let mut toml = String::from(
        "runtime = \"docker\"\npull = \"never\"\ndrain_timeout = \"20s\"\nhealth_interval = \"1s\"\nstartup_timeout = \"20s\"\n",
    );
    if let Some(image) = image {
        toml += &format!("image = \"{image}\"\n");
    }
    toml + extra
}

async fn admin_client(node: &TestNode, key: &ecdsa::SecretKey) -> AdminClient {
    AdminClient::connect(
        &format!("http://{}", node.management_address()),
        node.fixture().operator,
        Some(copy(key)),
    )
    .await
    .unwrap()
}

/// One task on `avs` (BN254 operator set, ECDSA aggregator), submitted unary.
async fn one_task(
    node: &TestNode,
    avs: &str,
    payload: u64,
) -> (NewTask, Result<TaskResult, tonic::Status>, Duration) {
    let fixture = node.fixture();
    let task = fixture.task(avs, Scheme::Bn254, &payload.to_be_bytes());
    let started = Instant::now();
    let answer = node.submit(fixture.sign(Scheme::Ecdsa, &task)).await;
    (task, answer, started.elapsed())
}

/// What a steady stream of tasks saw: every task with its answer, when it was sent, how long it
/// took.
type Answers = Vec<(
    NewTask,
    Result<TaskResult, tonic::Status>,
    Instant,
    Duration,
)>;

/// Sends one task to `avs` every `every` until `stop`, each on its own call (so a slow or failed
/// one never holds up the next), and returns every answer.
async fn steady_load(
    node: Arc<TestNode>,
    avs: &'static str,
    every: Duration,
    stop: Arc<AtomicBool>,
) -> Answers {
    let mut calls = Vec::new();
    let mut n = 1u64;
    let mut tick = tokio::time::interval(every);
    while !stop.load(Ordering::Relaxed) {
        tick.tick().await;
        let node = node.clone();
        n += 1;
        let payload = n;
        calls.push(tokio::spawn(async move {
            let sent = Instant::now();
            let (task, answer, took) = one_task(&node, avs, payload).await;
            (task, answer, sent, took)
        }));
    }
    let mut answers = Vec::new();
    for call in calls {
        answers.push(call.await.unwrap());
    }
    answers
}

/// The docker container serving `avs` for this node (exactly one running).
fn only_container(cleanup: &Cleanup, avs: &str) -> String {
    let running = cleanup.containers(Some(avs), false);
    assert_eq!(running.len(), 1, "running containers of {avs}: {running:?}");
    running[0].clone()
}

fn inspect(container: &str, format: &str) -> String {
    docker_cli(&["inspect", "-f", format, container])
        .trim()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deploys_serve_signed_tasks_from_a_hardened_container() {
    if !docker_available() {
        return;
    }
    let v1 = example_image(Some("v1"));
    let cleanup = Cleanup::new("deploy");
    let (key, management) = admin();
    // At trace level: no env value may reach the log at any level, the Docker client library's
    // own logging (which writes request bodies at debug) included.
    let node = TestNode::builder()
        .node_toml(&format!("id = \"{}\"", cleanup.node_id()))
        .extra_toml(&management)
        .avs(crate::common::AvsSpec::new(AVS).performer_toml(&docker_performer(None, "")))
        .log_level("trace")
        .start();
    let _log = node.log_on_panic();
    let fixture = node.fixture().clone();

    // No performer yet: tasks are refused at once, not left to their deadline.
    let (_, answer, took) = one_task(&node, AVS, 3).await;
    assert_eq!(answer.unwrap_err().code(), Code::Unavailable);
    assert!(took < Duration::from_secs(2), "refused after {took:?}");

    let mut admin = admin_client(&node, &key).await;
    let started = Instant::now();
    let deployed = admin
        .deploy(
            AVS,
            "",
            &v1,
            vec![("GREETING".into(), "hello-secret-value".into())],
        )
        .await
        .unwrap();
    let (task, answer, _) = one_task(&node, AVS, 12).await;
    let first_served = started.elapsed();
    fixture
        .verify_marked(&answer.unwrap(), &task, "v1")
        .unwrap();
    eprintln!("measured: DeployArtifact to first task served: {first_served:?}");
    assert!(deployed.success);

    // The container: hardened, labelled, no published port.
    let container = only_container(&cleanup, AVS);
    assert_eq!(
        inspect(&container, "{{.HostConfig.ReadonlyRootfs}}"),
        "true"
    );
    assert!(inspect(&container, "{{.HostConfig.CapDrop}}").contains("ALL"));
    assert!(inspect(&container, "{{.HostConfig.SecurityOpt}}").contains("no-new-privileges"));
    assert_ne!(inspect(&container, "{{.HostConfig.PidsLimit}}"), "<nil>");
    assert_ne!(inspect(&container, "{{.HostConfig.Memory}}"), "0");
    assert_ne!(inspect(&container, "{{.HostConfig.NanoCpus}}"), "0");
    assert!(inspect(&container, "{{json .HostConfig.Tmpfs}}").contains("/tmp"));
    // A cgroup namespace of its own, not the host's.
    assert_eq!(
        inspect(&container, "{{.HostConfig.CgroupnsMode}}"),
        "private"
    );
    // The example image runs as 65534: no warning about a root performer.
    assert!(
        !node
            .log()
            .contains("the performer runs as root inside its container"),
        "a non-root image was reported as root"
    );
    let bindings = inspect(&container, "{{json .HostConfig.PortBindings}}");
    assert!(
        bindings == "{}" || bindings == "null",
        "port bindings {bindings}"
    );
    assert!(!inspect(&container, "{{json .NetworkSettings.Ports}}").contains("HostPort"));
    assert_eq!(
        inspect(&container, "{{index .Config.Labels \"io.avsnode.node\"}}"),
        cleanup.node_id()
    );
    assert_eq!(
        inspect(&container, "{{index .Config.Labels \"io.avsnode.avs\"}}"),
        AVS
    );
    assert_eq!(
        inspect(
            &container,
            "{{index .Config.Labels \"io.avsnode.performer\"}}"
        ),
        deployed.deployment_id
    );
    assert!(
        inspect(
            &container,
            "{{index .Config.Labels \"io.avsnode.image-id\"}}"
        )
        .starts_with("sha256:")
    );
    assert!(inspect(&container, "{{json .Config.Env}}").contains("GREETING=hello-secret-value"));

    // Signed results verify for every operator set scheme.
    for scheme in crate::common::SCHEMES {
        let task = fixture.task(AVS, scheme, &9u64.to_be_bytes());
        let answer = node
            .submit(fixture.sign(Scheme::Ecdsa, &task))
            .await
            .unwrap();
        fixture.verify_marked(&answer, &task, "v1").unwrap();
    }

    // ListPerformers reports live state.
    let listed = admin.list("").await.unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0].performer_id, deployed.deployment_id);
    assert_eq!(listed[0].status, "healthy");
    assert!(listed[0].application_healthy);
    assert_eq!(listed[0].container_id, container);
    assert!(listed[0].artifact_digest.starts_with("sha256:"));

    // A deploy that cannot become healthy fails clearly and leaves v1 serving.
    let failed = admin
        .deploy(AVS, "", &crashing_image(), vec![])
        .await
        .unwrap_err();
    assert_eq!(failed.code(), Code::FailedPrecondition, "{failed:?}");
    assert!(
        failed.message().contains("keeps serving"),
        "{}",
        failed.message()
    );
    let (task, answer, _) = one_task(&node, AVS, 5).await;
    fixture
        .verify_marked(&answer.unwrap(), &task, "v1")
        .unwrap();
    assert_eq!(only_container(&cleanup, AVS), container);

    // A missing image with pull = never names the image.
    let missing = admin
        .deploy(AVS, "", "avsnode-no-such-image:never", vec![])
        .await
        .unwrap_err();
    assert!(
        missing.message().contains("avsnode-no-such-image:never"),
        "{}",
        missing.message()
    );

    // Two deploys at once: one of them is ALREADY_EXISTS.
    let mut other = admin_client(&node, &key).await;
    let v2 = example_image(Some("v2"));
    let (a, b) = tokio::join!(
        admin.deploy(AVS, "", &v2, vec![]),
        other.deploy(AVS, "", &v2, vec![])
    );
    let codes = [
        a.as_ref().err().map(|s| s.code()),
        b.as_ref().err().map(|s| s.code()),
    ];
    assert!(codes.contains(&None), "one deploy succeeds: {a:?} {b:?}");
    assert!(
        codes.contains(&Some(Code::AlreadyExists)),
        "the other is ALREADY_EXISTS: {a:?} {b:?}"
    );

    // Deploys are counted by result (ALREADY_EXISTS is not a deploy).
    let metrics = node.scrape_metrics().await;
    for (result, n) in [("success", 2), ("failed", 2)] {
        let line =
            format!("avsnode_performer_deployments_total{{avs=\"{AVS}\",result=\"{result}\"}} {n}");
        assert!(metrics.contains(&line), "{line} in {metrics}");
    }

    // Remove: the container goes, the AVS answers UNAVAILABLE at once.
    let id = a.or(b).unwrap().deployment_id;
    admin.remove(&id).await.unwrap();
    assert!(cleanup.containers(Some(AVS), true).is_empty());
    let (_, answer, _) = one_task(&node, AVS, 3).await;
    assert_eq!(answer.unwrap_err().code(), Code::Unavailable);
    assert_eq!(admin.remove(&id).await.unwrap_err().code(), Code::NotFound);

    // Env values never reach the log.
    assert!(
        !node.log().contains("hello-secret-value"),
        "an env value was logged"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_container_is_restarted_and_tasks_in_the_gap_fail_fast() {
    if !docker_available() {
        return;
    }
    let image = example_image(Some("k"));
    let cleanup = Cleanup::new("kill");
    let node = Arc::new(
        TestNode::builder()
            .node_toml(&format!("id = \"{}\"", cleanup.node_id()))
            .avs(
                crate::common::AvsSpec::new(AVS)
                    .performer_toml(&docker_performer(Some(&image), "")),
            )
            .start(),
    );
    let _log = node.log_on_panic();
    let fixture = node.fixture().clone();
    let container = only_container(&cleanup, AVS);

    let stop = Arc::new(AtomicBool::new(false));
    let load = tokio::spawn(steady_load(
        node.clone(),
        AVS,
        Duration::from_millis(20),
        stop.clone(),
    ));
    tokio::time::sleep(Duration::from_secs(1)).await;
    let killed = Instant::now();
    docker_cli(&["kill", &container]);
    // Serving again: a task succeeds.
    let back = loop {
        let (_, answer, _) = one_task(&node, AVS, 4).await;
        if answer.is_ok() {
            break killed.elapsed();
        }
        assert!(
            killed.elapsed() < Duration::from_secs(30),
            "not serving 30 s after the kill"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    eprintln!("measured: kill to serving again: {back:?}");
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    let answers = load.await.unwrap();

    let mut failed = 0;
    for (task, answer, _, took) in &answers {
        match answer {
            Ok(result) => fixture.verify_marked(result, task, "k").unwrap(),
            Err(status) => {
                failed += 1;
                assert_eq!(status.code(), Code::Unavailable, "{status:?}");
                // Quickly: well inside the task's 10 s deadline, with room for a loaded machine.
                assert!(
                    *took < Duration::from_secs(5),
                    "an UNAVAILABLE took {took:?}"
                );
            }
        }
    }
    let last = answers.iter().rev().take(10);
    for (_, answer, _, _) in last {
        assert!(answer.is_ok(), "service resumed: {answer:?}");
    }
    assert!(failed > 0, "the kill left a gap");
    eprintln!(
        "{} tasks, {failed} UNAVAILABLE during the restart",
        answers.len()
    );

    // The same container was restarted; nothing was signed twice (a resubmission answers the same).
    assert_eq!(only_container(&cleanup, AVS), container);
    for (task, answer, _, _) in answers.iter().filter(|a| a.1.is_ok()).take(20) {
        let again = node
            .submit(fixture.sign(Scheme::Ecdsa, task))
            .await
            .unwrap();
        let first = answer.as_ref().unwrap();
        assert_eq!(again.result_signature, first.result_signature);
        assert_eq!(again.output, first.output);
    }
    let metrics = node.scrape_metrics().await;
    assert!(
        metrics.contains(&format!(
            "avsnode_performer_restarts_total{{avs=\"{AVS}\"}} 1"
        )),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_crash_looping_performer_is_marked_failed_and_other_avss_keep_serving() {
    if !docker_available() {
        return;
    }
    let image = example_image(Some("c"));
    let cleanup = Cleanup::new("crashloop");
    // Exits after every task: each task kills the container, until the crash loop gives up.
    let crashing = docker_performer(
        Some(&image),
        "max_restarts = 2\nrestart_window = \"5m\"\nenv = { AVSNODE_EXAMPLE_EXIT_AFTER = \"1\" }\n",
    );
    let node = Arc::new(
        TestNode::builder()
            .node_toml(&format!("id = \"{}\"", cleanup.node_id()))
            .avs(crate::common::AvsSpec::new(AVS).performer_toml(&crashing))
            .avs(
                crate::common::AvsSpec::new(OTHER_AVS)
                    .performer_toml(&docker_performer(Some(&image), "")),
            )
            .start(),
    );
    let _log = node.log_on_panic();
    let fixture = node.fixture().clone();

    let stop = Arc::new(AtomicBool::new(false));
    let other = tokio::spawn(steady_load(
        node.clone(),
        OTHER_AVS,
        Duration::from_millis(50),
        stop.clone(),
    ));
    let started = Instant::now();
    let mut served = 0;
    loop {
        let (_, answer, took) = one_task(&node, AVS, 2).await;
        if answer.is_ok() {
            served += 1;
        }
        let metrics = node.scrape_metrics().await;
        if metrics.contains(&format!(
            "avsnode_performer_up{{avs=\"{AVS}\",performer=\"docker\"}} 0"
        )) && node.log().contains("crash loop")
        {
            break;
        }
        assert!(
            took < Duration::from_secs(5),
            "a task to the crashing AVS took {took:?}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no crash loop detected in 60 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Failed: refused at once, and it stays stopped (not restarted forever).
    let (_, answer, took) = one_task(&node, AVS, 2).await;
    assert_eq!(answer.unwrap_err().code(), Code::Unavailable);
    assert!(took < Duration::from_secs(1), "took {took:?}");
    assert!(
        (1..=3).contains(&served),
        "served {served} tasks: one per (re)start"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        cleanup.containers(Some(AVS), false).is_empty(),
        "the failed performer was restarted"
    );

    stop.store(true, Ordering::Relaxed);
    let answers = other.await.unwrap();
    assert!(answers.len() > 10);
    for (task, answer, _, _) in &answers {
        fixture
            .verify_marked(answer.as_ref().unwrap(), task, "c")
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_upgrade_under_load_loses_no_task_and_removes_the_old_container() {
    if !docker_available() {
        return;
    }
    let v1 = example_image(Some("v1"));
    let v2 = example_image(Some("v2"));
    let cleanup = Cleanup::new("upgrade");
    let (key, management) = admin();
    let node = Arc::new(
        TestNode::builder()
            .node_toml(&format!("id = \"{}\"", cleanup.node_id()))
            .extra_toml(&management)
            // A little work per task, so some are in the old container during the switch.
            .avs(
                crate::common::AvsSpec::new(AVS).performer_toml(&docker_performer(
                    Some(&v1),
                    "env = { AVSNODE_EXAMPLE_DELAY_MS = \"50\" }\n",
                )),
            )
            .start(),
    );
    let _log = node.log_on_panic();
    let fixture = node.fixture().clone();
    let old = only_container(&cleanup, AVS);

    let stop = Arc::new(AtomicBool::new(false));
    let load = tokio::spawn(steady_load(
        node.clone(),
        AVS,
        Duration::from_millis(20),
        stop.clone(),
    ));
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut admin = admin_client(&node, &key).await;
    let deploy_started = Instant::now();
    let deployed = admin.deploy(AVS, "", &v2, vec![]).await.unwrap();
    let switched = Instant::now();
    eprintln!(
        "measured: DeployArtifact (start, health, switch, drain, remove) took {:?}",
        deploy_started.elapsed()
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    let answers = load.await.unwrap();

    let mut v1_count = 0;
    let mut v2_count = 0;
    for (task, answer, sent, _) in &answers {
        let result = answer
            .as_ref()
            .unwrap_or_else(|e| panic!("a task failed during the upgrade: {e:?}"));
        if fixture.verify_marked(result, task, "v2").is_ok() {
            v2_count += 1;
        } else {
            fixture.verify_marked(result, task, "v1").unwrap();
            v1_count += 1;
            assert!(
                *sent < switched,
                "a task sent after the deploy returned was served by v1"
            );
        }
    }
    eprintln!(
        "{} tasks during the upgrade: {v1_count} by v1, {v2_count} by v2, none failed",
        answers.len()
    );
    assert!(v1_count > 0 && v2_count > 0);
    let new = only_container(&cleanup, AVS);
    assert_ne!(new, old);
    assert!(
        cleanup
            .containers(Some(AVS), true)
            .iter()
            .all(|c| *c != old),
        "the old container was removed"
    );
    assert_eq!(
        inspect(&new, "{{index .Config.Labels \"io.avsnode.performer\"}}"),
        deployed.deployment_id
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restarted_node_adopts_its_containers_and_removes_stale_ones() {
    if !docker_available() {
        return;
    }
    let v1 = example_image(Some("v1"));
    let v2 = example_image(Some("v2"));
    let cleanup = Cleanup::new("adopt");
    let (key, management) = admin();
    let fixture = Fixture::new();
    let builder = || {
        TestNode::builder()
            .fixture(fixture.clone())
            .node_toml(&format!("id = \"{}\"", cleanup.node_id()))
            .extra_toml(&management)
            .avs(crate::common::AvsSpec::new(AVS).performer_toml(&docker_performer(Some(&v1), "")))
            .avs(
                crate::common::AvsSpec::new(OTHER_AVS)
                    .performer_toml(&docker_performer(Some(&v1), "")),
            )
    };
    let mut node = builder().start();
    // A deployment through the API, with env, for the second AVS.
    let deployed = {
        let _log = node.log_on_panic();
        let mut admin = admin_client(&node, &key).await;
        admin
            .deploy(OTHER_AVS, "", &v2, vec![("MODE".into(), "adopt-me".into())])
            .await
            .unwrap()
    };
    let first = only_container(&cleanup, AVS);
    let second = only_container(&cleanup, OTHER_AVS);
    let (status, _) = node.stop();
    assert!(status.success());
    drop(node);
    // The containers outlive the node...
    assert_eq!(only_container(&cleanup, AVS), first);
    // ...and a stale one it owns (another performer id) is removed at the next start.
    let stale = docker_cli(&[
        "create",
        "--label",
        &format!("io.avsnode.node={}", cleanup.node_id()),
        "--label",
        &format!("io.avsnode.avs={AVS}"),
        "--label",
        "io.avsnode.performer=stale-one",
        &v1,
    ]);
    let stale = stale.trim();

    let node = builder().start();
    let _log = node.log_on_panic();
    assert_eq!(
        only_container(&cleanup, AVS),
        first,
        "adopted, not replaced"
    );
    assert_eq!(
        only_container(&cleanup, OTHER_AVS),
        second,
        "the API deployment was adopted"
    );
    assert_eq!(
        cleanup.containers(None, true).len(),
        2,
        "no duplicates, the stale one removed"
    );
    assert!(
        !cleanup
            .containers(None, true)
            .iter()
            .any(|c| c.starts_with(stale))
    );
    assert!(node.log().contains("adopted"), "the log says so");
    let (task, answer, _) = one_task(&node, AVS, 6).await;
    fixture
        .verify_marked(&answer.unwrap(), &task, "v1")
        .unwrap();
    let (task, answer, _) = one_task(&node, OTHER_AVS, 6).await;
    fixture
        .verify_marked(&answer.unwrap(), &task, "v2")
        .unwrap();
    let listed = admin_client(&node, &key)
        .await
        .list(OTHER_AVS)
        .await
        .unwrap();
    assert_eq!(listed[0].performer_id, deployed.deployment_id);

    // The deployments file keeps the env for a recreate, readable by the owner only.
    let file = fixture.data_dir().join("deployments.json");
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&file).unwrap().permissions());
    assert_eq!(mode & 0o077, 0, "deployments.json is mode {mode:o}");
    assert!(std::fs::read_to_string(&file).unwrap().contains("adopt-me"));

    // Removed behind the node's back: the next start recreates it from the file, with its env.
    drop(_log);
    drop(node);
    docker_cli(&["rm", "-f", &second]);
    let node = builder().start();
    let _log = node.log_on_panic();
    let recreated = only_container(&cleanup, OTHER_AVS);
    assert_ne!(recreated, second);
    assert!(inspect(&recreated, "{{json .Config.Env}}").contains("MODE=adopt-me"));
    let (task, answer, _) = one_task(&node, OTHER_AVS, 7).await;
    fixture
        .verify_marked(&answer.unwrap(), &task, "v2")
        .unwrap();
}

/// Another handle on the same key (secret keys are deliberately not `Clone`).
fn copy(key: &ecdsa::SecretKey) -> ecdsa::SecretKey {
    ecdsa::SecretKey::from_bytes(&*key.to_bytes()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_on_shutdown_removes_the_containers() {
    if !docker_available() {
        return;
    }
    let image = example_image(None);
    let cleanup = Cleanup::new("stop");
    let mut node = TestNode::builder()
        .node_toml(&format!("id = \"{}\"", cleanup.node_id()))
        .extra_toml("[docker]\nstop_on_shutdown = true\n")
        .avs(crate::common::AvsSpec::new(AVS).performer_toml(&docker_performer(Some(&image), "")))
        .start();
    only_container(&cleanup, AVS);
    let (status, _) = node.stop();
    assert!(status.success());
    assert!(
        cleanup.containers(None, true).is_empty(),
        "containers left after a shutdown with stop_on_shutdown"
    );
}

/// `egress = false`: the AVS's container joins an internal network (`<network>-internal`, no
/// route beyond this host) while the others stay on the node's network; the node still reaches
/// it, and its tasks are signed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_performer_without_egress_runs_on_an_internal_network() {
    if !docker_available() {
        return;
    }
    let image = example_image(Some("v1"));
    let cleanup = Cleanup::new("egress");
    let node = TestNode::builder()
        .node_toml(&format!("id = \"{}\"", cleanup.node_id()))
        .avs(
            crate::common::AvsSpec::new(AVS)
                .performer_toml(&docker_performer(Some(&image), "egress = false\n")),
        )
        .avs(
            crate::common::AvsSpec::new(OTHER_AVS)
                .performer_toml(&docker_performer(Some(&image), "")),
        )
        .start();
    let _log = node.log_on_panic();
    let fixture = node.fixture().clone();
    for avs in [AVS, OTHER_AVS] {
        let (task, answer, _) = one_task(&node, avs, 5).await;
        fixture
            .verify_marked(&answer.unwrap(), &task, "v1")
            .unwrap();
    }
    let internal = format!("avsnode-{}-internal", cleanup.node_id());
    let networks = |avs| {
        inspect(
            &only_container(&cleanup, avs),
            "{{range $name, $_ := .NetworkSettings.Networks}}{{$name}} {{end}}",
        )
    };
    assert_eq!(networks(AVS).trim(), internal);
    assert_eq!(
        networks(OTHER_AVS).trim(),
        format!("avsnode-{}", cleanup.node_id())
    );
    assert_eq!(
        docker_cli(&["network", "inspect", "-f", "{{.Internal}}", &internal]).trim(),
        "true"
    );
    assert_eq!(
        docker_cli(&[
            "network",
            "inspect",
            "-f",
            "{{.Internal}}",
            &format!("avsnode-{}", cleanup.node_id())
        ])
        .trim(),
        "false"
    );
}
