//! Replicas of one operator on a shared PostgreSQL ledger, through the real binary: a task sent
//! to two replicas at once runs once and is signed once; replicas killed (`kill -9`) at random
//! under load behind nginx (`grpc_pass`) never answer one task with two signatures; the database
//! stopped under load means UNAVAILABLE fast and nothing signed, and service resumes by itself;
//! a replica cut off from the database releases nothing and rejoins; an embedded ledger moves to
//! the shared one with its refusals.
//!
//! Needs PostgreSQL 15 (and nginx for the load-balancer test): without them the tests print why
//! and pass, except under `CI=true`, where they fail. `AVSNODE_KILL_CYCLES` sets the number of
//! kill cycles (default 20).

#![allow(clippy::unwrap_used, clippy::print_stderr)]

use std::collections::HashMap;
use std::path::Path;
use std::process::{Child, Command};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::{AVS, AvsSpec, Fixture, Link, SCHEMES, TestNode};
use avsnode_aggregator::NewTask;
use avsnode_proto::executor::TaskResult;
use avsnode_proto::executor::executor_service_client::ExecutorServiceClient;
use avsnode_tests::postgres::{Postgres, postgres_available};
use tonic::Code;

/// A replica on the shared ledger: random outputs (two executions of a task differ), every
/// execution logged to `task_log`, claims held for a second.
fn replica(
    fixture: &Arc<Fixture>,
    server: &Postgres,
    name: &str,
    task_log: &Path,
    listen: Option<&str>,
) -> TestNode {
    replica_with(fixture, server, server.port, name, task_log, listen, &[])
}

/// [`replica`], reaching the database at `db_port` (a proxy's, to cut it off), with more
/// performer options.
fn replica_with(
    fixture: &Arc<Fixture>,
    server: &Postgres,
    db_port: u16,
    name: &str,
    task_log: &Path,
    listen: Option<&str>,
    performer: &[&str],
) -> TestNode {
    replica_builder(fixture, server, db_port, name, task_log, listen, performer).start()
}

/// The builder [`replica_with`] starts.
fn replica_builder(
    fixture: &Arc<Fixture>,
    server: &Postgres,
    db_port: u16,
    name: &str,
    task_log: &Path,
    listen: Option<&str>,
    performer: &[&str],
) -> crate::common::NodeBuilder {
    let data_dir = fixture.dir().join(format!("data-{name}"));
    let log = task_log.display().to_string();
    let args: Vec<&str> = ["--random-output", "--task-log", log.as_str()]
        .into_iter()
        .chain(performer.iter().copied())
        .collect();
    let url = server
        .url()
        .replace(&format!(":{}/", server.port), &format!(":{db_port}/"));
    let mut builder = TestNode::builder()
        .fixture(fixture.clone())
        .data_dir(&data_dir)
        .avs(AvsSpec::new(AVS).performer(&args))
        .extra_toml(&format!(
            "[ledger]\nbackend = \"postgres\"\n[ledger.postgres]\nurl = {url:?}\n\
             password_file = {:?}\nreplica = {name:?}\nclaim_lease = \"1s\"\n",
            server.password_file.display().to_string(),
        ));
    if let Some(listen) = listen {
        builder = builder.intake_listen(listen);
    }
    builder
}

fn executions(task_log: &Path) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for line in std::fs::read_to_string(task_log)
        .unwrap_or_default()
        .lines()
    {
        *counts.entry(line.to_owned()).or_default() += 1;
    }
    counts
}

/// Every task sent to two replicas at the same moment: both answers are byte-identical, one
/// digest per task cluster-wide, the performer ran once per task, and a third replica asked
/// later gives the same answer.
#[tokio::test(flavor = "multi_thread")]
async fn a_task_sent_to_two_replicas_runs_once_and_is_signed_once() {
    if !postgres_available() {
        return;
    }
    let server = Postgres::start();
    let fixture = Fixture::new();
    let task_log = fixture.dir().join("executions");
    let nodes: Vec<TestNode> = (0..3)
        .map(|i| replica(&fixture, &server, &format!("r{i}"), &task_log, None))
        .collect();
    let tasks: Vec<NewTask> = (0..30)
        .map(|i| fixture.task(AVS, SCHEMES[i % 3], &[i as u8, 7]))
        .collect();
    for (i, task) in tasks.iter().enumerate() {
        let submission = fixture.sign(SCHEMES[i % 3], task);
        let (a, b) = (&nodes[i % 3], &nodes[(i + 1) % 3]);
        let (first, second) = tokio::join!(a.submit(submission.clone()), b.submit(submission));
        let (first, second) = (first.unwrap(), second.unwrap());
        assert_eq!(first, second, "task {i}: two replicas answered differently");
        fixture.verify_random(&first, task).unwrap();
        let later = nodes[(i + 2) % 3]
            .submit(fixture.sign(SCHEMES[i % 3], task))
            .await
            .unwrap();
        assert_eq!(
            later, first,
            "task {i}: the third replica answered differently"
        );
    }
    let counts = executions(&task_log);
    assert_eq!(counts.len(), tasks.len(), "{counts:?}");
    assert!(
        counts.values().all(|&n| n == 1),
        "a task ran more than once: {counts:?}"
    );
}

/// nginx in front of the replicas, as an operator runs them.
struct Nginx {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Nginx {
    /// nginx with `deploy/nginx-replicas.conf` (its three example replicas replaced by
    /// `upstreams`, its port by a free one), in a folder of its own.
    fn start(upstreams: &[String]) -> Nginx {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let shipped = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/nginx-replicas.conf"),
        )
        .unwrap();
        let mut site = shipped.replace(
            "listen 9090 http2;",
            &format!("listen 127.0.0.1:{port} http2;"),
        );
        for (i, upstream) in upstreams.iter().enumerate() {
            let example = format!("server 10.0.0.1{}:9090", i + 1);
            assert!(
                site.contains(&example),
                "{example} is not in the shipped file"
            );
            site = site.replace(&example, &format!("server {upstream}"));
        }
        let d = dir.path().display();
        let conf = format!(
            "daemon off;\nworker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\n\
             events {{}}\nhttp {{\naccess_log off;\nclient_body_temp_path {d};\n\
             proxy_temp_path {d};\nfastcgi_temp_path {d};\nuwsgi_temp_path {d};\n\
             scgi_temp_path {d};\n{site}\n}}\n"
        );
        let path = dir.path().join("nginx.conf");
        std::fs::write(&path, conf).unwrap();
        let child = Command::new("nginx")
            .arg("-c")
            .arg(&path)
            .arg("-e")
            .arg(dir.path().join("error.log"))
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "nginx did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Nginx {
            child,
            port,
            _dir: dir,
        }
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGTERM: the master stops its workers too (SIGKILL would orphan them).
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn nginx_available() -> bool {
    if Command::new("nginx").arg("-v").output().is_ok() {
        return true;
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "nginx is not installed on CI; .ci/run installs nginx-light"
    );
    eprintln!("skipping: nginx is not installed (apt-get install nginx-light)");
    false
}

/// Unary and streamed load through nginx while replicas are killed with SIGKILL and restarted, at
/// least 20 cycles: every answer for a task is byte-identical to every other answer for it
/// (before and after kills), every task is answered in the end (a dead replica's claims are
/// taken over), and asked again afterwards each task gets the answer it got before.
#[tokio::test(flavor = "multi_thread")]
async fn replicas_killed_under_load_never_answer_a_task_twice_differently() {
    if !postgres_available() || !nginx_available() {
        return;
    }
    let cycles: usize = std::env::var("AVSNODE_KILL_CYCLES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(20);
    let server = Postgres::start();
    let fixture = Fixture::new();
    let task_log = fixture.dir().join("executions");
    let listens: Vec<String> = (0..3)
        .map(|_| format!("127.0.0.1:{}", free_port()))
        .collect();
    let mut nodes: Vec<TestNode> = listens
        .iter()
        .enumerate()
        .map(|(i, l)| replica(&fixture, &server, &format!("r{i}"), &task_log, Some(l)))
        .collect();
    let nginx = Nginx::start(&listens);
    let url = format!("http://127.0.0.1:{}", nginx.port);

    let tasks: Arc<Vec<NewTask>> = Arc::new(
        (0..200)
            .map(|i| {
                let mut task = fixture.task(AVS, SCHEMES[i % 3], &[i as u8, (i / 256) as u8]);
                task.deadline_unix_ms = Some(crate::common::now_ms() + 600_000);
                task
            })
            .collect(),
    );
    let answers: Arc<Mutex<HashMap<usize, Vec<TaskResult>>>> = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    // Four senders, each going over the tasks again and again (an aggregator's retries), through
    // the load balancer.
    let mut senders = Vec::new();
    for worker in 0..4 {
        let (tasks, answers, stop, fixture, url) = (
            tasks.clone(),
            answers.clone(),
            stop.clone(),
            fixture.clone(),
            url.clone(),
        );
        senders.push(tokio::spawn(async move {
            let mut n = worker;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let i = n % tasks.len();
                n += 4;
                let Ok(mut client) = ExecutorServiceClient::connect(url.clone()).await else {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                let submission = fixture.sign(SCHEMES[i % 3], &tasks[i]);
                match client.submit_task(submission).await {
                    Ok(answer) => answers
                        .lock()
                        .unwrap()
                        .entry(i)
                        .or_default()
                        .push(answer.into_inner()),
                    Err(status) => assert!(
                        matches!(
                            status.code(),
                            Code::Unavailable | Code::Unknown | Code::Internal | Code::Cancelled
                        ),
                        "task {i}: {status:?}"
                    ),
                }
            }
        }));
    }
    // Two more send over TaskStreams through the load balancer (each stream reaches one replica;
    // a stream cut by a kill is opened again, maybe to another).
    let ids: Arc<HashMap<String, usize>> = Arc::new(
        tasks
            .iter()
            .enumerate()
            .map(|(i, t)| (t.task_id.to_wire_string(), i))
            .collect(),
    );
    for worker in 0..2 {
        let (tasks, answers, stop, fixture, url, ids) = (
            tasks.clone(),
            answers.clone(),
            stop.clone(),
            fixture.clone(),
            url.clone(),
            ids.clone(),
        );
        senders.push(tokio::spawn(async move {
            use avsnode_proto::stream::task_stream_client::TaskStreamClient;
            use avsnode_proto::stream::{StreamRequest, stream_event, stream_request};
            let mut n = 1 + worker * 2;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let Ok(mut client) = TaskStreamClient::connect(url.clone()).await else {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                let (sender, outbound) = tokio::sync::mpsc::channel(4);
                let Ok(response) = client
                    .open(tokio_stream::wrappers::ReceiverStream::new(outbound))
                    .await
                else {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                let mut inbound = response.into_inner();
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let i = n % tasks.len();
                    n += 5;
                    let request = StreamRequest {
                        kind: Some(stream_request::Kind::Task(
                            fixture.sign(SCHEMES[i % 3], &tasks[i]),
                        )),
                    };
                    if sender.send(request).await.is_err() {
                        break;
                    }
                    let Ok(Some(event)) = inbound.message().await else {
                        break;
                    };
                    match event.kind {
                        Some(stream_event::Kind::Result(result)) => {
                            let i = ids[&result.task_id];
                            answers.lock().unwrap().entry(i).or_default().push(result);
                        }
                        Some(stream_event::Kind::Rejection(r)) => assert_eq!(
                            r.code,
                            Code::Unavailable as i32,
                            "task {}: {r:?}",
                            r.task_id
                        ),
                        None => panic!("an empty stream event"),
                    }
                }
            }
        }));
    }
    // Random moments and victims (xorshift, seeded from the clock; the seed is printed).
    let mut seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    eprintln!("kill schedule seed {seed}");
    let mut next = move |below: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % below
    };
    for _ in 0..cycles {
        tokio::time::sleep(Duration::from_millis(100 + next(300))).await;
        let victim = next(nodes.len() as u64) as usize;
        nodes[victim].kill();
        let name = format!("r{victim}");
        let (fixture, server_ref, log, listen) = (&fixture, &server, &task_log, &listens[victim]);
        nodes[victim] = replica(fixture, server_ref, &name, log, Some(listen));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for sender in senders {
        sender.await.unwrap();
    }

    // Every task, asked once more through the load balancer: answered, and the same as before.
    let mut client = ExecutorServiceClient::connect(url.clone()).await.unwrap();
    let answers = answers.lock().unwrap().clone();
    for (i, task) in tasks.iter().enumerate() {
        let mut last = None;
        for _ in 0..50 {
            match client.submit_task(fixture.sign(SCHEMES[i % 3], task)).await {
                Ok(answer) => {
                    last = Some(answer.into_inner());
                    break;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
        let last = last.unwrap_or_else(|| panic!("task {i} was never answered"));
        fixture.verify_random(&last, task).unwrap();
        for earlier in answers.get(&i).into_iter().flatten() {
            assert_eq!(
                earlier, &last,
                "task {i} answered with two different signatures"
            );
        }
    }
    let answered: usize = answers.values().map(Vec::len).sum();
    eprintln!("{cycles} kill cycles, {answered} answers during them");
}

/// PostgreSQL stopped under load: the tasks in flight (mid-performer) and those arriving while
/// it is away are answered UNAVAILABLE within seconds (not at their deadline) and nothing is
/// signed meanwhile; `/readyz` names the ledger and a metric counts it; started again, the same
/// replica serves every one of those tasks by itself.
#[tokio::test(flavor = "multi_thread")]
async fn a_stopped_database_means_unavailable_fast_and_service_resumes() {
    if !postgres_available() {
        return;
    }
    let server = Postgres::start();
    let fixture = Fixture::new();
    let task_log = fixture.dir().join("executions");
    let node = Arc::new(replica_with(
        &fixture,
        &server,
        server.port,
        "r0",
        &task_log,
        None,
        &["--delay-ms", "300"],
    ));
    let before = fixture.task(AVS, SCHEMES[0], &[1]);
    node.submit(fixture.sign(SCHEMES[0], &before))
        .await
        .unwrap();

    let tasks: Vec<NewTask> = (0..30u8)
        .map(|i| {
            let mut task = fixture.task(AVS, SCHEMES[i as usize % 3], &[i, 2]);
            task.deadline_unix_ms = Some(crate::common::now_ms() + 60_000);
            task
        })
        .collect();
    let submit_all = |tasks: &[NewTask]| {
        tasks
            .iter()
            .enumerate()
            .map(|(i, task)| {
                let (node, submission) = (node.clone(), fixture.sign(SCHEMES[i % 3], task));
                tokio::spawn(async move { node.submit(submission).await })
            })
            .collect::<Vec<_>>()
    };
    // Twenty in the performer when the database stops, ten more while it is away.
    let in_flight = submit_all(&tasks[..20]);
    tokio::time::sleep(Duration::from_millis(100)).await;
    server.stop();
    let stopped = Instant::now();
    let arriving = submit_all(&tasks[20..]);
    for (i, call) in in_flight.into_iter().chain(arriving).enumerate() {
        let status = call.await.unwrap().unwrap_err();
        assert_eq!(status.code(), Code::Unavailable, "task {i}: {status:?}");
    }
    assert!(
        stopped.elapsed() < Duration::from_secs(5),
        "the last task was answered {:?} after the database stopped",
        stopped.elapsed()
    );
    let ready = readyz(&node).await;
    assert!(ready.contains("ledger unavailable"), "{ready}");
    let metrics = node.scrape_metrics().await;
    assert!(
        crate::common::sample(&metrics, "avsnode_ledger_unavailable_total", &[]) >= 30.0,
        "{metrics}"
    );

    server.start_again();
    let deadline = Instant::now() + Duration::from_secs(30);
    for (i, task) in tasks.iter().enumerate() {
        loop {
            match node.submit(fixture.sign(SCHEMES[i % 3], task)).await {
                Ok(answer) => {
                    fixture.verify_random(&answer, task).unwrap();
                    break;
                }
                Err(status) => {
                    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
                    assert!(
                        Instant::now() < deadline,
                        "service did not resume: {status:?}"
                    );
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    }
    let ready = readyz(&node).await;
    assert!(ready.starts_with("HTTP/1.1 200"), "{ready}");
}

async fn readyz(node: &TestNode) -> String {
    let addr = node.metrics_address();
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    stream
        .write_all(b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).await.unwrap();
    text
}

/// One replica cut off from the database while it holds claims (its performer is slow, so the
/// cut comes mid-task): it answers those tasks UNAVAILABLE and releases no signature; the other
/// replicas carry on, take its lapsed claims over and sign them; once the path heals it answers
/// the same tasks with the others' records, byte for byte.
#[tokio::test(flavor = "multi_thread")]
async fn a_replica_cut_off_from_the_database_releases_nothing_and_rejoins() {
    if !postgres_available() {
        return;
    }
    let server = Postgres::start();
    let link = Link::start(server.port).await;
    let fixture = Fixture::new();
    let task_log = fixture.dir().join("executions");
    let cut_off = replica_with(
        &fixture,
        &server,
        link.port,
        "cut",
        &task_log,
        None,
        &["--delay-ms", "1500"],
    );
    let other = replica(&fixture, &server, "other", &task_log, None);

    let tasks: Vec<NewTask> = (0..6)
        .map(|i| {
            let mut task = fixture.task(AVS, SCHEMES[i % 3], &[i as u8, 9]);
            task.deadline_unix_ms = Some(crate::common::now_ms() + 120_000);
            task
        })
        .collect();
    // The cut-off replica claims every task and starts its (slow) performer...
    let mut pending = Vec::new();
    for (i, task) in tasks.iter().enumerate() {
        let submission = fixture.sign(SCHEMES[i % 3], task);
        let mut client = cut_off.client().await;
        pending.push(tokio::spawn(
            async move { client.submit_task(submission).await },
        ));
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    // ...and loses the database before it can seal anything.
    link.cut();
    let started = Instant::now();
    for (i, call) in pending.into_iter().enumerate() {
        let status = call.await.unwrap().unwrap_err();
        assert_eq!(status.code(), Code::Unavailable, "task {i}: {status:?}");
    }
    // The other replica serves meanwhile: new tasks, and the cut-off one's tasks once their
    // claims lapse (a second), without waiting for the cut to heal.
    let fresh = fixture.task(AVS, SCHEMES[0], &[42]);
    fixture
        .verify_random(
            &other
                .submit(fixture.sign(SCHEMES[0], &fresh))
                .await
                .unwrap(),
            &fresh,
        )
        .unwrap();
    let mut signed = Vec::new();
    for (i, task) in tasks.iter().enumerate() {
        let deadline = Instant::now() + Duration::from_secs(20);
        let answer = loop {
            match other.submit(fixture.sign(SCHEMES[i % 3], task)).await {
                Ok(answer) => break answer,
                Err(status) => {
                    assert_eq!(status.code(), Code::Unavailable, "task {i}: {status:?}");
                    assert!(Instant::now() < deadline, "task {i} was never taken over");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        };
        fixture.verify_random(&answer, task).unwrap();
        signed.push(answer);
    }
    eprintln!("cut: the others took over after {:?}", started.elapsed());
    // Healed: the cut-off replica rejoins and answers from the records, byte for byte.
    link.heal();
    let healed = Instant::now();
    for (i, task) in tasks.iter().enumerate() {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match cut_off.submit(fixture.sign(SCHEMES[i % 3], task)).await {
                Ok(answer) => {
                    assert_eq!(answer, signed[i], "task {i} answered differently");
                    eprintln!("task {i} answered {:?} after the heal", healed.elapsed());
                    break;
                }
                Err(status) => {
                    assert_eq!(status.code(), Code::Unavailable, "task {i}: {status:?}");
                    assert!(Instant::now() < deadline, "the replica never rejoined");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    }
}

/// `avsnode ledger export` from a stopped single node's embedded ledger, `import` into the shared
/// one through a replica's configuration, then a replica whose performer fails everything: it
/// answers the old tasks byte for byte from the imported records and keeps refusing their old
/// conflicts; a second import changes nothing, and an export that conflicts is refused whole.
/// `check-config` reports the schema it finds without changing it.
#[tokio::test(flavor = "multi_thread")]
async fn an_embedded_ledger_moves_to_the_shared_one_with_its_refusals() {
    if !postgres_available() {
        return;
    }
    let server = Postgres::start();
    let fixture = Fixture::new();
    let cli = |args: &[&std::ffi::OsStr]| {
        let (status, stdout, stderr) = crate::common::avsnode_cli(args);
        (status.success(), format!("{stdout}{stderr}"))
    };
    // A single node signs three tasks with random outputs, and stops.
    let mut single = TestNode::builder()
        .fixture(fixture.clone())
        .avs(AvsSpec::new(AVS).performer(&["--random-output"]))
        .start();
    let tasks: Vec<NewTask> = (0..3)
        .map(|i| fixture.task(AVS, SCHEMES[i], &[i as u8, 5]))
        .collect();
    let mut answers = Vec::new();
    for (i, task) in tasks.iter().enumerate() {
        answers.push(single.submit(fixture.sign(SCHEMES[i], task)).await.unwrap());
    }
    assert!(single.stop().0.success());
    let export = fixture.dir().join("single.json");
    let (ok, out) = cli(&[
        "ledger".as_ref(),
        "export".as_ref(),
        "--data-dir".as_ref(),
        fixture.data_dir().as_os_str(),
        "--out".as_ref(),
        export.as_os_str(),
    ]);
    assert!(ok, "{out}");

    let task_log = fixture.dir().join("executions");
    let mut builder = replica_builder(
        &fixture,
        &server,
        server.port,
        "r0",
        &task_log,
        None,
        &["--fail-rate", "1"],
    );
    let config = builder.write_config();
    let (ok, out) = cli(&["check-config".as_ref(), config.as_os_str()]);
    assert!(ok && out.contains("schema version 0"), "{out}");
    let import = |file: &Path| {
        cli(&[
            "ledger".as_ref(),
            "import".as_ref(),
            "--config".as_ref(),
            config.as_os_str(),
            file.as_os_str(),
        ])
    };
    let (ok, out) = import(&export);
    assert!(ok && out.contains("inserted: 3"), "{out}");
    let (ok, out) = import(&export);
    assert!(
        ok && out.contains("inserted: 0") && out.contains("skipped: 3"),
        "{out}"
    );
    let (ok, out) = cli(&["check-config".as_ref(), config.as_os_str()]);
    assert!(ok && out.contains("schema version 1"), "{out}");

    // Another node signed the same task ids with other outputs: its export is refused whole.
    let other_dir = fixture.dir().join("other-data");
    let mut other_node = TestNode::builder()
        .fixture(fixture.clone())
        .data_dir(&other_dir)
        .avs(AvsSpec::new(AVS).performer(&["--random-output"]))
        .start();
    other_node
        .submit(fixture.sign(SCHEMES[0], &tasks[0]))
        .await
        .unwrap();
    assert!(other_node.stop().0.success());
    let conflicting = fixture.dir().join("other.json");
    let (ok, out) = cli(&[
        "ledger".as_ref(),
        "export".as_ref(),
        "--data-dir".as_ref(),
        other_dir.as_os_str(),
        "--out".as_ref(),
        conflicting.as_os_str(),
    ]);
    assert!(ok, "{out}");
    let (ok, out) = import(&conflicting);
    assert!(!ok && out.contains("conflict"), "{out}");

    let replica = builder.start();
    for (i, task) in tasks.iter().enumerate() {
        let again = replica
            .submit(fixture.sign(SCHEMES[i], task))
            .await
            .unwrap();
        assert_eq!(again, answers[i], "task {i}: not the imported answer");
        let mut reissued = task.clone();
        reissued.reference_timestamp -= 10;
        let status = replica
            .submit(fixture.sign(SCHEMES[i], &reissued))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    }
    assert!(executions(&task_log).is_empty(), "the performer ran");
}
