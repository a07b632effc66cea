//! The ways operators deploy, run for real: the node's image (built by `deploy/build-image.sh`
//! from the test binary) managing docker performers through the mounted engine socket, and the
//! compose stack of `deploy/docker-compose.yml` (node, example performer, Prometheus built from
//! Debian's binary) brought up and torn down.
//!
//! Without a Docker Engine (or Prometheus, for the stack) these tests print why and pass, except
//! under `CI=true`, where that is a failure.

#![allow(clippy::unwrap_used, clippy::print_stderr)]

use std::net::SocketAddr;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::{AVS, AvsSpec, Fixture, TestNode, stream_to};
use crate::monitoring_live::{
    DASHBOARD, api_value, dashboard_queries, http_get, substitute, url_encode,
};
use avsnode_proto::executor::{TaskResult, executor_service_client::ExecutorServiceClient};
use avsnode_proto::stream::stream_event;
use avsnode_signer::Scheme;
use avsnode_tests::docker::{
    docker_available, docker_cli, example_image, node_image, prometheus_image,
};
use serde_json::Value;

/// The node's user in the image.
pub(crate) const NODE_UID: u32 = 10001;

/// Hands the fixture's directory (configuration, keys, password files) to the image's user, as
/// an operator does (`chown -R 10001:10001`): the node refuses key files others can read.
pub(crate) fn give_to_node_user(dir: &Path) {
    fn walk(path: &Path) {
        std::os::unix::fs::chown(path, Some(NODE_UID), Some(NODE_UID))
            .unwrap_or_else(|e| panic!("chown {} (the tests run as root): {e}", path.display()));
        if path.is_dir() {
            for entry in std::fs::read_dir(path).unwrap() {
                walk(&entry.unwrap().path());
            }
        }
    }
    walk(dir);
}

/// The host address Docker published `port` of `container` on.
pub(crate) fn published(container: &str, port: u16) -> SocketAddr {
    let out = docker_cli(&["port", container, &format!("{port}/tcp")]);
    out.lines()
        .find_map(|line| line.trim().parse().ok())
        .unwrap_or_else(|| panic!("{container} publishes no {port}: {out:?}"))
}

/// Submits one task (BN254 set, ECDSA aggregator) to `url` until a result comes back (the node
/// may still be starting, or its performer), at most `within`; the result verified. Err: the
/// last answer.
async fn first_signed(
    fixture: &Fixture,
    url: &str,
    within: Duration,
) -> Result<TaskResult, String> {
    let deadline = Instant::now() + within;
    let mut last = String::new();
    let mut n = 0u64;
    while Instant::now() < deadline {
        n += 1;
        let task = fixture.task(AVS, Scheme::Bn254, &n.to_be_bytes());
        match ExecutorServiceClient::connect(url.to_owned()).await {
            Ok(mut client) => match client.submit_task(fixture.sign(Scheme::Ecdsa, &task)).await {
                Ok(answer) => {
                    let result = answer.into_inner();
                    fixture.assert_verifies(&result, &task);
                    return Ok(result);
                }
                Err(status) => last = status.to_string(),
            },
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Err(format!(
        "no signed task from {url} within {within:?}; last answer: {last}"
    ))
}

/// Streams `n` tasks to `url` on one `TaskStream`; every answer is a result whose signatures
/// verify.
async fn stream_and_verify(fixture: &Fixture, url: &str, n: usize, salt: u64) {
    let tasks: Vec<_> = (0..n as u64)
        .map(|i| fixture.task(AVS, Scheme::Bn254, &(salt << 32 | i).to_be_bytes()))
        .collect();
    let submissions: Vec<_> = tasks
        .iter()
        .map(|t| fixture.sign(Scheme::Ecdsa, t))
        .collect();
    let ids: Vec<String> = submissions.iter().map(|s| s.task_id.clone()).collect();
    let events = stream_to(url.to_owned(), submissions).await;
    assert_eq!(events.len(), n);
    for event in events {
        match event.kind {
            Some(stream_event::Kind::Result(result)) => {
                let at = ids
                    .iter()
                    .position(|id| *id == result.task_id)
                    .expect("a result for a task sent");
                fixture.assert_verifies(&result, &tasks[at]);
            }
            other => panic!("not a result: {other:?}"),
        }
    }
}

/// Removes what a test left in the engine, however it ends.
pub(crate) struct Leftovers {
    pub(crate) containers: Vec<String>,
    pub(crate) node_label: Option<String>,
    pub(crate) networks: Vec<String>,
    pub(crate) volumes: Vec<String>,
    pub(crate) compose: Option<Compose>,
}

impl Drop for Leftovers {
    fn drop(&mut self) {
        let quiet = |args: &[&str]| {
            let _ = Command::new("docker").args(args).output();
        };
        if let Some(compose) = &self.compose {
            let _ = compose.command(&["down", "-v", "--timeout", "5"]).output();
        }
        for container in &self.containers {
            quiet(&["rm", "-f", "-v", container]);
        }
        if let Some(label) = &self.node_label
            && let Ok(out) = Command::new("docker")
                .args([
                    "ps",
                    "-aq",
                    "--filter",
                    &format!("label=io.avsnode.node={label}"),
                ])
                .output()
        {
            for id in String::from_utf8_lossy(&out.stdout).lines() {
                quiet(&["rm", "-f", id]);
            }
        }
        for network in &self.networks {
            quiet(&["network", "rm", network]);
        }
        for volume in &self.volumes {
            quiet(&["volume", "rm", "-f", volume]);
        }
    }
}

/// The image, run as an operator would with docker performers: the engine socket mounted (its
/// group added, the node stays uid 10001), the configuration read-only, the ledger in a volume,
/// the intake published. The node creates its performer network and container, joins the
/// network itself, and signs tasks streamed from the host; stopped and started, it adopts its
/// performer container instead of starting a second.
#[tokio::test(flavor = "multi_thread")]
async fn the_node_image_runs_docker_performers_through_the_socket_and_adopts_them() {
    if !docker_available() {
        return;
    }
    let image = node_image();
    let performer = example_image(None);
    let id = format!("t-image-{}", std::process::id());
    let name = format!("avsnode-{id}");
    let _leftovers = Leftovers {
        containers: vec![name.clone()],
        node_label: Some(id.clone()),
        networks: vec![format!("avsnode-{id}")],
        volumes: vec![format!("{name}-data")],
        compose: None,
    };

    // What the image is.
    assert_eq!(
        docker_cli(&["image", "inspect", "-f", "{{.Config.User}}", &image]).trim(),
        "10001:10001"
    );
    assert!(
        docker_cli(&[
            "image",
            "inspect",
            "-f",
            "{{json .Config.Healthcheck}}",
            &image
        ])
        .contains("healthcheck")
    );
    let size: u64 = docker_cli(&["image", "inspect", "-f", "{{.Size}}", &image])
        .trim()
        .parse()
        .unwrap();
    eprintln!("measured: image {image}: {} MB", size / 1_000_000);

    let fixture = Fixture::new();
    let mut builder = TestNode::builder()
        .fixture(fixture.clone())
        .node_toml(&format!("id = \"{id}\""))
        .data_dir(Path::new("/var/lib/avsnode"))
        .intake_listen("0.0.0.0:9090")
        .avs(AvsSpec::new(AVS).performer_toml(&format!(
            "runtime = \"docker\"\nimage = \"{performer}\"\npull = \"never\"\n\
             health_interval = \"1s\"\nstartup_timeout = \"20s\"\n"
        )));
    let config = builder.write_config();
    give_to_node_user(fixture.dir());
    let socket_group = std::fs::metadata("/var/run/docker.sock")
        .expect("the engine's socket at /var/run/docker.sock")
        .gid()
        .to_string();
    let config_name = config.file_name().unwrap().to_str().unwrap();
    docker_cli(&[
        "run",
        "-d",
        "--name",
        &name,
        "--group-add",
        &socket_group,
        "-v",
        "/var/run/docker.sock:/var/run/docker.sock",
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
        &format!("/etc/avsnode/{config_name}"),
    ]);
    let logs = |name: &str| {
        let out = Command::new("docker")
            .args(["logs", name])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    // A random host port is published anew when the node connects its container to the
    // performer network: read it once the node serves.
    let serving = |runs: usize| {
        let deadline = Instant::now() + Duration::from_secs(60);
        while logs(&name).matches("intake serving").count() < runs {
            assert!(
                Instant::now() < deadline,
                "the node did not serve within 60 s:\n{}",
                logs(&name)
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        format!("http://{}", published(&name, 9090))
    };
    let url = serving(1);
    if let Err(e) = first_signed(&fixture, &url, Duration::from_secs(60)).await {
        panic!("{e}; the node's log:\n{}", logs(&name));
    }
    stream_and_verify(&fixture, &url, 50, 1).await;

    let performers = |all: bool| {
        let mut args = vec!["ps", "-q", "--no-trunc"];
        if all {
            args.push("-a");
        }
        let filter = format!("label=io.avsnode.node={id}");
        args.extend(["--filter", &filter]);
        docker_cli(&args)
            .lines()
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    let before = performers(true);
    assert_eq!(before.len(), 1, "performer containers: {before:?}");
    let log = logs(&name);
    assert!(
        log.contains("joined the performer network"),
        "the node did not join its network:\n{log}"
    );
    let networks = docker_cli(&[
        "inspect",
        "-f",
        "{{range $k, $v := .NetworkSettings.Networks}}{{$k}} {{end}}",
        &name,
    ]);
    assert!(networks.contains(&format!("avsnode-{id}")), "{networks}");

    // Stopped (SIGTERM, in-flight tasks finish) and started: the same performer container.
    docker_cli(&["stop", "-t", "40", &name]);
    assert_eq!(
        performers(false),
        before,
        "the performer keeps running while the node is stopped"
    );
    docker_cli(&["start", &name]);
    let url = serving(2);
    if let Err(e) = first_signed(&fixture, &url, Duration::from_secs(60)).await {
        panic!("{e}; the node's log:\n{}", logs(&name));
    }
    stream_and_verify(&fixture, &url, 50, 2).await;
    assert_eq!(
        performers(true),
        before,
        "the restarted node adopted its container, not a second one"
    );
    assert!(
        logs(&name).contains("adopted"),
        "no adoption in the log:\n{}",
        logs(&name)
    );
}

/// The compose tool: `docker compose` (v2) where the plugin exists, else `docker-compose`.
#[derive(Debug)]
pub(crate) struct Compose {
    project: String,
    env: Vec<(String, String)>,
}

impl Compose {
    fn command(&self, args: &[&str]) -> Command {
        let v2 = Command::new("docker")
            .args(["compose", "version"])
            .output()
            .is_ok_and(|out| out.status.success());
        let mut command = if v2 {
            let mut c = Command::new("docker");
            c.arg("compose");
            c
        } else {
            Command::new("docker-compose")
        };
        command
            .current_dir(avsnode_tests::workspace_root().join("deploy"))
            .args(["-p", &self.project])
            .args(args)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        command
    }

    fn run(&self, args: &[&str]) -> String {
        let output = self.command(args).output().unwrap();
        assert!(
            output.status.success(),
            "compose {args:?} failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Ids of the project's containers, networks or volumes left in the engine.
    fn remaining(&self, kind: &str) -> Vec<String> {
        let filter = format!("label=com.docker.compose.project={}", self.project);
        let args: Vec<&str> = match kind {
            "containers" => vec!["ps", "-aq", "--filter", &filter],
            "networks" => vec!["network", "ls", "-q", "--filter", &filter],
            _ => vec!["volume", "ls", "-q", "--filter", &filter],
        };
        docker_cli(&args).lines().map(str::to_owned).collect()
    }
}

/// `deploy/docker-compose.yml` as shipped, with the images built here: up, the node healthy and
/// signing, Prometheus scraping it and answering the dashboard's queries; `down` leaves no
/// container or network, keeps the ledger's volume (`down -v` removes it).
#[tokio::test(flavor = "multi_thread")]
async fn the_compose_stack_comes_up_signs_is_scraped_and_goes_away() {
    if !docker_available() {
        return;
    }
    if !Path::new("/usr/bin/prometheus").exists() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "no /usr/bin/prometheus on CI (.ci/run installs Debian's prometheus)"
        );
        eprintln!("skipping: no /usr/bin/prometheus to build the stack's Prometheus image");
        return;
    }
    let (image, prometheus) = (node_image(), prometheus_image());
    let fixture = Fixture::new();
    let mut builder = TestNode::builder()
        .fixture(fixture.clone())
        .data_dir(Path::new("/var/lib/avsnode"))
        .intake_listen("0.0.0.0:9090")
        .avs(
            AvsSpec::new(AVS)
                .performer_toml("runtime = \"remote\"\nendpoint = \"http://performer:8080\"\n"),
        );
    let config = builder.write_config();
    // The stack reads deploy/config/avsnode.toml: here, a directory of the test's own.
    std::fs::copy(&config, fixture.dir().join("avsnode.toml")).unwrap();
    give_to_node_user(fixture.dir());
    let compose = Compose {
        project: format!("avsnode-t{}", std::process::id()),
        env: vec![
            ("AVSNODE_IMAGE".into(), image),
            ("PROMETHEUS_IMAGE".into(), prometheus),
            (
                "AVSNODE_CONFIG_DIR".into(),
                fixture.dir().display().to_string(),
            ),
            ("AVSNODE_INTAKE_PUBLISH".into(), "127.0.0.1:".into()),
            ("PROMETHEUS_PUBLISH".into(), "127.0.0.1:".into()),
        ],
    };
    let _leftovers = Leftovers {
        compose: Some(Compose {
            project: compose.project.clone(),
            env: compose.env.clone(),
        }),
        containers: Vec::new(),
        node_label: None,
        networks: Vec::new(),
        volumes: Vec::new(),
    };

    let started = Instant::now();
    compose.run(&["up", "-d"]);
    let port = |service: &str| -> SocketAddr {
        let out = compose.run(&["port", service, "9090"]);
        out.trim()
            .parse()
            .unwrap_or_else(|_| panic!("{service} publishes 9090 at {out:?}"))
    };
    let url = format!("http://{}", port("node"));
    if let Err(e) = first_signed(&fixture, &url, Duration::from_secs(90)).await {
        let logs = compose.command(&["logs", "--no-color"]).output().unwrap();
        panic!(
            "{e}; the stack's logs:\n{}",
            String::from_utf8_lossy(&logs.stdout)
        );
    }
    eprintln!(
        "measured: docker compose up to the first signed task: {:?}",
        started.elapsed()
    );
    stream_and_verify(&fixture, &url, 100, 3).await;

    // Healthy by the image's HEALTHCHECK (`avsnode healthcheck`).
    let node_container = compose.run(&["ps", "-q", "node"]).trim().to_owned();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let health = docker_cli(&["inspect", "-f", "{{.State.Health.Status}}", &node_container]);
        if health.trim() == "healthy" {
            break;
        }
        assert!(Instant::now() < deadline, "the node is {health} after 60 s");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // Prometheus scrapes the node; the dashboard's task queries return data.
    let prometheus = port("prometheus");
    let query = |expr: String| async move {
        let response = http_get(
            prometheus,
            &format!("/api/v1/query?query={}", url_encode(&expr)),
        )
        .await;
        assert_eq!(response.status, 200, "{expr}: {}", response.body);
        let body: Value = serde_json::from_str(&response.body).unwrap();
        body["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    };
    let deadline = Instant::now() + Duration::from_secs(90);
    while query("up{job=\"avsnode\"} == 1".into()).await.is_empty() {
        assert!(
            Instant::now() < deadline,
            "Prometheus never scraped the node"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(avsnode_tests::workspace_root().join(DASHBOARD)).unwrap(),
    )
    .unwrap();
    let completed = dashboard_queries(&dashboard)
        .into_iter()
        .find(|(_, expr)| expr.contains("avsnode_tasks_completed_total"))
        .expect("a dashboard query of completed tasks");
    // A rate needs two scrapes in its window (the stack scrapes every 15 s).
    let expr = substitute(&completed.1, ".*");
    for round in 4.. {
        stream_and_verify(&fixture, &url, 10, round).await;
        let result = query(expr.clone()).await;
        if result.iter().any(|series| api_value(series) > 0.0) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "dashboard panel {:?}: {expr} returned {result:?}",
            completed.0
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let signed = query(format!(
        "sum(avsnode_tasks_completed_total{{avs=\"{AVS}\",outcome=\"signed\"}})"
    ))
    .await;
    assert!(
        signed.first().map(api_value).unwrap_or(0.0) >= 101.0,
        "signed tasks in Prometheus: {signed:?}"
    );

    // Down: nothing left but the volumes (the ledger is kept); down -v removes those too.
    compose.run(&["down", "--timeout", "40"]);
    assert!(compose.remaining("containers").is_empty());
    assert!(compose.remaining("networks").is_empty());
    let volumes = compose.remaining("volumes");
    assert!(
        volumes.iter().any(|v| v.ends_with("avsnode-data")),
        "the ledger's volume survives down: {volumes:?}"
    );
    compose.run(&["down", "-v"]);
    assert!(compose.remaining("volumes").is_empty());
}
