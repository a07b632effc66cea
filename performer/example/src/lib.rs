//! A small reference performer: the code an AVS developer copies.
//!
//! Serves the Hourglass `PerformerService` (`ExecuteTask`, `StartSync`) and `grpc.health.v1.Health`
//! on `PORT` (default 8080, as Hourglass images do). Its task is [`square`]: the payload is a
//! big-endian unsigned integer, the result its square. It is used by the demo, the end-to-end
//! tests, and — built as a static binary in a `FROM scratch` image — by the Docker runtime tests.
//!
//! The [`Options`] beyond `--port`/`--host` are fault-injection knobs for those tests (slow, failing,
//! nondeterministic, lying, crashing or garbage-answering performers); a real performer has none
//! of them.

mod garbage;

use std::net::{IpAddr, SocketAddr};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use avsnode_proto::performer::performer_service_server::{
    PerformerService, PerformerServiceServer,
};
use avsnode_proto::performer::{StartSyncRequest, StartSyncResponse, TaskRequest, TaskResponse};
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::Notify;
use tonic::server::NamedService;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status};
use tonic_health::ServingStatus;

pub use garbage::{Garbage, NOT_A_TASK_RESPONSE, UNFRAMED_BODY};

/// The longest payload [`square`] accepts: a `u64`.
pub const MAX_PAYLOAD_LEN: usize = 8;

/// Why [`square`] rejected a payload.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SquareError {
    /// The payload does not fit in a `u64`.
    #[error("payload is {0} bytes; expected a big-endian unsigned integer of at most 8 bytes")]
    TooLong(usize),
}

/// The example task: squares a big-endian unsigned integer of at most 8 bytes (empty = 0) and
/// returns the square as 16 bytes big-endian (a `u128`, which cannot overflow).
pub fn square(payload: &[u8]) -> Result<Vec<u8>, SquareError> {
    if payload.len() > MAX_PAYLOAD_LEN {
        return Err(SquareError::TooLong(payload.len()));
    }
    let n = payload
        .iter()
        .fold(0u128, |n, &byte| (n << 8) | u128::from(byte));
    Ok((n * n).to_be_bytes().to_vec())
}

/// The example performer's command line (and the settings of [`serve`]).
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "avsnode-example-performer", version, about)]
pub struct Options {
    /// Port to listen on (Hourglass performers listen on 8080).
    #[arg(long, env = "PORT", default_value_t = 8080)]
    pub port: u16,
    /// Address to listen on.
    #[arg(long, default_value = "0.0.0.0")]
    pub host: IpAddr,
    /// Sleep this many milliseconds before answering each task.
    #[arg(long, env = "AVSNODE_EXAMPLE_DELAY_MS", default_value_t = 0)]
    pub delay_ms: u64,
    /// Fraction of tasks (0 to 1) that fail with INTERNAL.
    #[arg(long, default_value_t = 0.0, value_parser = parse_rate)]
    pub fail_rate: f64,
    /// Append 16 random bytes to each result, so two executions of one task differ.
    #[arg(long)]
    pub random_output: bool,
    /// Echo a task id different from the one received (a performer fault).
    #[arg(long)]
    pub wrong_task_id: bool,
    /// Pad each result with zero bytes up to this many bytes.
    #[arg(long)]
    pub output_size: Option<usize>,
    /// Answer `ExecuteTask` with bytes that are not a `TaskResponse`, while health checks say
    /// SERVING: `protobuf` (the default) a gRPC message with status OK that fails to decode,
    /// `unframed` an HTTP/2 body that is not gRPC-framed.
    #[arg(
        long,
        env = "AVSNODE_EXAMPLE_GARBAGE",
        value_enum,
        num_args = 0..=1,
        default_missing_value = "protobuf"
    )]
    pub garbage: Option<Garbage>,
    /// Report NOT_SERVING on the health service.
    #[arg(long)]
    pub not_serving: bool,
    /// Exit (code 3) in the middle of every task, without answering: a performer that crashes
    /// mid-task.
    #[arg(long)]
    pub crash_mid_task: bool,
    /// Stop (the binary exits with code 1) after answering this many tasks. 0 stops at once,
    /// before serving anything: a `FROM scratch` image with `CMD ["--exit-after", "0"]` is a
    /// crash-looping performer.
    #[arg(long, env = "AVSNODE_EXAMPLE_EXIT_AFTER")]
    pub exit_after: Option<u64>,
    /// Append this string's UTF-8 bytes to each result (after the 16-byte square), so a test can
    /// tell which performer (or image) answered.
    #[arg(long, env = "AVSNODE_EXAMPLE_MARKER")]
    pub marker: Option<String>,
    /// Append each executed task's id (one line per execution) to this file: a test counts how
    /// often each task ran, across performers sharing the file.
    #[arg(long)]
    pub task_log: Option<std::path::PathBuf>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            port: 8080,
            host: IpAddr::from([0, 0, 0, 0]),
            delay_ms: 0,
            fail_rate: 0.0,
            random_output: false,
            wrong_task_id: false,
            output_size: None,
            garbage: None,
            not_serving: false,
            crash_mid_task: false,
            exit_after: None,
            marker: None,
            task_log: None,
        }
    }
}

fn parse_rate(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(rate) if (0.0..=1.0).contains(&rate) => Ok(rate),
        _ => Err(format!("{s:?} is not a number between 0 and 1")),
    }
}

/// The `PerformerService` implementation: squares payloads, with the faults [`Options`] asks for.
#[derive(Debug)]
pub struct ExamplePerformer {
    options: Options,
    answered: AtomicU64,
    limit_reached: Notify,
}

impl ExamplePerformer {
    /// A performer behaving as `options` says.
    pub fn new(options: Options) -> Self {
        Self {
            options,
            answered: AtomicU64::new(0),
            limit_reached: Notify::new(),
        }
    }
}

#[tonic::async_trait]
impl PerformerService for ExamplePerformer {
    async fn start_sync(
        &self,
        _request: Request<StartSyncRequest>,
    ) -> Result<Response<StartSyncResponse>, Status> {
        Ok(Response::new(StartSyncResponse {}))
    }

    async fn execute_task(
        &self,
        request: Request<TaskRequest>,
    ) -> Result<Response<TaskResponse>, Status> {
        let options = &self.options;
        let TaskRequest {
            mut task_id,
            payload,
        } = request.into_inner();
        if options.delay_ms > 0 {
            tokio::time::sleep(Duration::from_millis(options.delay_ms)).await;
        }
        if options.crash_mid_task {
            std::process::exit(3);
        }
        if options.fail_rate > 0.0 && rand::random::<f64>() < options.fail_rate {
            return Err(Status::internal("injected failure (--fail-rate)"));
        }
        let mut result = square(&payload).map_err(|e| Status::invalid_argument(e.to_string()))?;
        if let Some(path) = &options.task_log {
            use std::io::Write as _;
            // One short write per line with O_APPEND: lines of several performers never mix.
            let line = format!("{}\n", String::from_utf8_lossy(&task_id));
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .and_then(|mut f| f.write_all(line.as_bytes()))
                .map_err(|e| Status::internal(format!("task log: {e}")))?;
        }
        if let Some(marker) = &options.marker {
            result.extend_from_slice(marker.as_bytes());
        }
        if options.random_output {
            result.extend_from_slice(&rand::random::<[u8; 16]>());
        }
        if let Some(size) = options.output_size {
            result.resize(result.len().max(size), 0);
        }
        if options.wrong_task_id {
            match task_id.last_mut() {
                Some(byte) => *byte ^= 1,
                None => task_id.push(0),
            }
        }
        let answered = self.answered.fetch_add(1, Ordering::Relaxed) + 1;
        if options.exit_after == Some(answered) {
            // A stored permit: `serve` stops gracefully, so this answer still reaches the caller.
            self.limit_reached.notify_one();
        }
        Ok(Response::new(TaskResponse { task_id, result }))
    }
}

/// Why [`serve`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    /// The `shutdown` future completed.
    Shutdown,
    /// `--exit-after` tasks were answered.
    TaskLimit,
}

/// Serves `PerformerService` and `grpc.health.v1.Health` on `listener` until `shutdown` completes
/// (or `--exit-after` tasks were answered), then stops gracefully: in-flight tasks are answered.
/// With `--exit-after 0` it returns [`Stopped::TaskLimit`] at once, serving nothing.
pub async fn serve(
    listener: TcpListener,
    options: Options,
    shutdown: impl Future<Output = ()>,
) -> Result<Stopped, tonic::transport::Error> {
    if options.exit_after == Some(0) {
        return Ok(Stopped::TaskLimit);
    }
    let (reporter, health) = tonic_health::server::health_reporter();
    let status = if options.not_serving {
        ServingStatus::NotServing
    } else {
        ServingStatus::Serving
    };
    let performer_name = <PerformerServiceServer<ExamplePerformer> as NamedService>::NAME;
    for service in ["", performer_name] {
        reporter.set_service_status(service, status).await;
    }

    let garbage = options.garbage;
    let performer = std::sync::Arc::new(ExamplePerformer::new(options));
    let stop = async {
        tokio::select! {
            () = shutdown => {}
            () = performer.limit_reached.notified() => {}
        }
    };
    let service = PerformerServiceServer::from_arc(performer.clone());
    let router = tonic::transport::Server::builder().add_service(health);
    let router = match garbage {
        None => router.add_service(service),
        Some(kind) => router.add_service(garbage::Garbled {
            kind,
            inner: service,
        }),
    };
    router
        // Small request/response pairs: Nagle would add latency to every task.
        .serve_with_incoming_shutdown(TcpIncoming::from(listener).with_nodelay(Some(true)), stop)
        .await?;
    let answered = performer.answered.load(Ordering::Relaxed);
    Ok(match performer.options.exit_after {
        Some(limit) if answered >= limit => Stopped::TaskLimit,
        _ => Stopped::Shutdown,
    })
}

/// Runs the performer as a process (`avsnode-example-performer`, `avsnode example-performer`) until
/// SIGINT or SIGTERM (container runtimes stop with SIGTERM); returns the process's exit code: a
/// failure for `--exit-after`, the deliberate crash of the node's restart tests. One thread:
/// squaring a number needs no second one, whose wake-ups cost more than it saves.
#[allow(clippy::print_stderr)]
pub fn run(options: Options) -> ExitCode {
    if options.exit_after == Some(0) {
        eprintln!("example performer: exiting at once (--exit-after 0)");
        return ExitCode::FAILURE;
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("example performer: cannot start its runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let addr = SocketAddr::new(options.host, options.port);
        let listener = match TcpListener::bind(addr).await {
            Ok(listener) => listener,
            Err(e) => {
                eprintln!("example performer: cannot listen on {addr}: {e}");
                return ExitCode::FAILURE;
            }
        };
        let shutdown = shutdown_signal();
        let local = listener.local_addr().unwrap_or(addr);
        eprintln!("example performer listening on {local}");
        match serve(listener, options, shutdown).await {
            Ok(Stopped::Shutdown) => ExitCode::SUCCESS,
            Ok(Stopped::TaskLimit) => ExitCode::FAILURE,
            Err(e) => {
                eprintln!("example performer: {e}");
                ExitCode::FAILURE
            }
        }
    })
}

/// Resolves on SIGINT or SIGTERM; without signal handlers, never (stop by killing). The handlers
/// are installed when this is called, not when it is first polled: [`run`] calls it before it
/// prints that it listens, so a runtime that stops the performer at once still stops it cleanly.
fn shutdown_signal() -> impl Future<Output = ()> {
    let handlers = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    );
    async move {
        let (Ok(mut int), Ok(mut term)) = handlers else {
            return std::future::pending().await;
        };
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn squares() {
        let cases: [(&[u8], u128); 4] = [
            (&[], 0),
            (&[1], 1),
            (&[1, 0, 0, 0, 0], 1 << 64),
            (&[0xff; 8], u128::from(u64::MAX) * u128::from(u64::MAX)),
        ];
        for (payload, expected) in cases {
            let out = square(payload).unwrap();
            assert_eq!(out.len(), 16, "payload {payload:?}");
            assert_eq!(out, expected.to_be_bytes(), "payload {payload:?}");
        }
        assert_eq!(square(&[0, 2]).unwrap()[15], 4);
    }

    #[test]
    fn rejects_more_than_eight_bytes() {
        assert_eq!(square(&[0; 9]), Err(SquareError::TooLong(9)));
        assert!(
            square(&[0; 9])
                .unwrap_err()
                .to_string()
                .contains("at most 8 bytes")
        );
    }

    async fn execute(options: Options, task_id: &[u8], payload: &[u8]) -> TaskResponse {
        let request = Request::new(TaskRequest {
            task_id: task_id.to_vec(),
            payload: payload.to_vec(),
        });
        ExamplePerformer::new(options)
            .execute_task(request)
            .await
            .unwrap()
            .into_inner()
    }

    #[tokio::test]
    async fn knobs_change_the_answer() {
        let id = b"0x0000000000000000000000000000000000000000000000000000000000000001";
        let plain = execute(Options::default(), id, &[3]).await;
        assert_eq!(
            (plain.task_id.as_slice(), plain.result.as_slice()),
            (&id[..], &square(&[3]).unwrap()[..])
        );

        let random = Options {
            random_output: true,
            ..Options::default()
        };
        let (a, b) = (
            execute(random.clone(), id, &[3]).await,
            execute(random, id, &[3]).await,
        );
        assert_eq!(a.result.len(), 32);
        assert_eq!(a.result[..16], plain.result[..]);
        assert_ne!(a.result, b.result);

        let wrong_id = Options {
            wrong_task_id: true,
            ..Options::default()
        };
        assert_ne!(execute(wrong_id, id, &[3]).await.task_id, id);

        let padded = Options {
            output_size: Some(1000),
            ..Options::default()
        };
        let out = execute(padded, id, &[3]).await.result;
        assert_eq!(out.len(), 1000);
        assert_eq!(out[..16], plain.result[..]);

        let marked = Options {
            marker: Some("blue".into()),
            ..Options::default()
        };
        let out = execute(marked, id, &[3]).await.result;
        assert_eq!(out[..16], plain.result[..]);
        assert_eq!(&out[16..], b"blue");
    }

    #[tokio::test]
    async fn exit_after_zero_serves_nothing() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let options = Options {
            exit_after: Some(0),
            ..Options::default()
        };
        let stopped = serve(listener, options, std::future::pending()).await;
        assert_eq!(stopped.unwrap(), Stopped::TaskLimit);
    }

    #[tokio::test]
    async fn bad_payloads_and_injected_failures_are_errors() {
        let request = || {
            Request::new(TaskRequest {
                task_id: vec![],
                payload: vec![0; 9],
            })
        };
        let status = ExamplePerformer::new(Options::default())
            .execute_task(request())
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument);

        let failing = ExamplePerformer::new(Options {
            fail_rate: 1.0,
            ..Options::default()
        });
        let status = failing.execute_task(request()).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::Internal);
    }

    /// Serves `options` on an ephemeral port until the test's runtime ends; returns a channel to it.
    async fn connect(options: Options) -> tonic::transport::Channel {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(serve(listener, options, std::future::pending()));
        tonic::transport::Endpoint::from_shared(url)
            .unwrap()
            .connect()
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn garbage_answers_do_not_decode_while_health_says_serving() {
        use avsnode_proto::performer::performer_service_client::PerformerServiceClient;
        use tonic_health::pb::health_check_response::ServingStatus as Health;
        use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

        let performer = <PerformerServiceServer<ExamplePerformer> as NamedService>::NAME;
        let cases = [
            (Garbage::Protobuf, "failed to decode Protobuf message"),
            (Garbage::Unframed, "invalid compression flag"),
        ];
        for (kind, says) in cases {
            let channel = connect(Options {
                garbage: Some(kind),
                ..Options::default()
            })
            .await;
            let mut tasks = PerformerServiceClient::new(channel.clone());
            for _ in 0..2 {
                let task = TaskRequest {
                    task_id: b"0x01".to_vec(),
                    payload: vec![3],
                };
                let status = tasks.execute_task(task).await.unwrap_err();
                assert_eq!(status.code(), tonic::Code::Internal, "{kind:?}: {status:?}");
                assert!(status.message().contains(says), "{kind:?}: {status:?}");
            }
            // The other method and the health service are unaffected.
            tasks.start_sync(StartSyncRequest::default()).await.unwrap();
            let health = HealthClient::new(channel)
                .check(HealthCheckRequest {
                    service: performer.into(),
                })
                .await
                .unwrap()
                .into_inner();
            assert_eq!(health.status(), Health::Serving, "{kind:?}");
        }
    }

    #[test]
    fn garbage_is_not_a_task_response() {
        use prost::Message;
        assert!(TaskResponse::decode(NOT_A_TASK_RESPONSE).is_err());
        assert!(!matches!(UNFRAMED_BODY.as_bytes()[0], 0 | 1));
    }

    #[test]
    fn garbage_kind_defaults_to_protobuf() {
        use clap::Parser;
        let parse = |args: &[&str]| {
            Options::try_parse_from(["performer"].iter().chain(args))
                .unwrap()
                .garbage
        };
        assert_eq!(parse(&[]), None);
        assert_eq!(parse(&["--garbage"]), Some(Garbage::Protobuf));
        assert_eq!(
            parse(&["--garbage", "--delay-ms", "1"]),
            Some(Garbage::Protobuf)
        );
        assert_eq!(parse(&["--garbage", "unframed"]), Some(Garbage::Unframed));
    }

    #[test]
    fn fail_rate_must_be_a_fraction() {
        assert_eq!(parse_rate("0.25"), Ok(0.25));
        assert!(parse_rate("1.5").is_err());
        assert!(parse_rate("x").is_err());
    }
}
