//! The intake listener (DESIGN §2.2): the Hourglass `ExecutorService/SubmitTask`, the streaming
//! `TaskStream/Open`, `grpc.health.v1.Health` and server reflection.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use avsnode_proto::executor::executor_service_server::{ExecutorService, ExecutorServiceServer};
use avsnode_proto::executor::{TaskResult, TaskSubmission};
use avsnode_proto::stream::task_stream_server::{TaskStream, TaskStreamServer};
use avsnode_proto::stream::{
    StreamEvent, StreamRequest, TaskRejection, stream_event, stream_request,
};
use tokio::sync::{Semaphore, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::config::IntakeConfig;
use crate::pipeline::rejection::Rejection;
use crate::pipeline::{Peer, Pipeline};
use avsnode_listener::tls::{ClientCertificate, ServerTls};
use avsnode_listener::{CallLimitLayer, Connections};

/// Why the intake stopped serving.
#[derive(Debug, thiserror::Error)]
pub enum IntakeError {
    /// The reflection service could not load the descriptor set (a build defect).
    #[error("reflection service: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    /// The gRPC server failed.
    #[error("intake server: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// Serves the intake on `connections` (admitted by the intake's gate) until `shutdown`
/// resolves; over TLS when `tls` is given. At most `intake.max_calls` calls are open at once,
/// `intake.max_calls_per_source` from one address.
pub async fn serve(
    pipeline: Arc<Pipeline>,
    connections: Connections,
    options: IntakeConfig,
    tls: Option<Arc<ServerTls>>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), IntakeError> {
    let calls = CallLimitLayer::new(
        "intake",
        options.max_calls,
        options.max_calls_per_source,
        Some(pipeline.metrics().clone()),
    );
    let mut server = tonic::transport::Server::builder()
        .layer(calls)
        .max_concurrent_streams(options.max_concurrent_streams)
        .http2_keepalive_interval(Some(options.keepalive_interval))
        .http2_keepalive_timeout(Some(options.keepalive_timeout))
        .http2_max_header_list_size(MAX_HEADER_LIST_SIZE);
    let intake = Intake {
        pipeline,
        options: Arc::new(options),
    };
    let (health_reporter, health) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<ExecutorServiceServer<Intake>>()
        .await;
    health_reporter
        .set_serving::<TaskStreamServer<Intake>>()
        .await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(avsnode_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let max_message_size = intake.options.max_message_size;
    let handshake_timeout = intake.options.handshake_timeout;
    let router = server
        .add_service(health)
        .add_service(
            ExecutorServiceServer::new(intake.clone())
                .max_decoding_message_size(max_message_size)
                .max_encoding_message_size(max_message_size),
        )
        .add_service(
            TaskStreamServer::new(intake)
                .max_decoding_message_size(max_message_size)
                .max_encoding_message_size(max_message_size),
        )
        .add_service(reflection);
    match tls {
        None => {
            router
                .serve_with_incoming_shutdown(connections, shutdown)
                .await?
        }
        Some(tls) => {
            router
                .serve_with_incoming_shutdown(
                    avsnode_listener::tls::incoming(connections, tls, handshake_timeout),
                    shutdown,
                )
                .await?
        }
    }
    Ok(())
}

/// Largest block of request headers accepted (tonic's default is 16 KiB as well; set so it is
/// never unbounded).
const MAX_HEADER_LIST_SIZE: u32 = 16 << 10;

#[derive(Debug, Clone)]
struct Intake {
    pipeline: Arc<Pipeline>,
    options: Arc<IntakeConfig>,
}

#[tonic::async_trait]
impl ExecutorService for Intake {
    async fn submit_task(
        &self,
        request: Request<TaskSubmission>,
    ) -> Result<Response<TaskResult>, Status> {
        let timeout = grpc_timeout(request.metadata());
        let peer = peer(&request);
        self.pipeline
            .submit(request.into_inner(), timeout, "unary", &peer)
            .await
            .map(Response::new)
            .map_err(|r| r.to_status())
    }
}

#[tonic::async_trait]
impl TaskStream for Intake {
    type OpenStream = ReceiverStream<Result<StreamEvent, Status>>;

    async fn open(
        &self,
        request: Request<Streaming<StreamRequest>>,
    ) -> Result<Response<Self::OpenStream>, Status> {
        let peer = Arc::new(peer(&request));
        let mut inbound = request.into_inner();
        let cap = self.options.stream_inflight;
        let idle_timeout = self.options.stream_idle_timeout;
        let (events, receiver) = mpsc::channel(cap);
        let slots = Arc::new(Semaphore::new(cap));
        let pipeline = self.pipeline.clone();
        let open_streams = pipeline.metrics().streams_open.clone();
        open_streams.inc();
        tokio::spawn(async move {
            loop {
                // Backpressure: with `cap` tasks unanswered, stop reading; HTTP/2 flow control
                // then slows the sender instead of the node buffering without bound.
                let Ok(slot) = slots.clone().acquire_owned().await else {
                    break;
                };
                let read = loop {
                    match tokio::time::timeout(idle_timeout, inbound.message()).await {
                        Ok(read) => break Some(read),
                        // Idle only if none of its tasks is still running (ours is the one
                        // slot held for this read).
                        Err(_) if slots.available_permits() + 1 == cap => break None,
                        Err(_) => {}
                    }
                };
                let request = match read {
                    Some(Ok(Some(request))) => request,
                    Some(Ok(None)) => break,
                    Some(Err(status)) => {
                        // A frame that does not decode (or the client going away): the tasks
                        // already read are answered first, then the stream ends with the read
                        // error, so the client learns why.
                        tracing::debug!("task stream ended by a read error: {status}");
                        drop(slot);
                        let _ = slots.acquire_many(cap as u32).await;
                        let _ = events.send(Err(status)).await;
                        break;
                    }
                    None => {
                        tracing::debug!("task stream idle for {idle_timeout:?}; closing it");
                        let _ = events
                            .send(Err(Status::unavailable(format!(
                                "task stream idle for {}; closed (intake.stream_idle_timeout)",
                                humantime::format_duration(idle_timeout)
                            ))))
                            .await;
                        break;
                    }
                };
                let pipeline = pipeline.clone();
                let events = events.clone();
                let peer = peer.clone();
                // Boxed: the task's future is several KiB, copied on every move otherwise.
                tokio::spawn(Box::pin(async move {
                    let event = answer(&pipeline, request, peer).await;
                    // A client that went away no longer wants the answer; the ledger has it.
                    let _ = events.send(Ok(event)).await;
                    drop(slot);
                }));
            }
            open_streams.dec();
        });
        Ok(Response::new(ReceiverStream::new(receiver)))
    }
}

/// One stream request to its event: a result or a rejection, never a closed stream.
async fn answer(pipeline: &Arc<Pipeline>, request: StreamRequest, peer: Arc<Peer>) -> StreamEvent {
    let kind = match request.kind {
        Some(stream_request::Kind::Task(task)) => {
            let task_id = task.task_id.clone();
            match pipeline.submit(task, Ok(None), "stream", &peer).await {
                Ok(result) => stream_event::Kind::Result(result),
                Err(rejection) => stream_event::Kind::Rejection(TaskRejection {
                    task_id,
                    code: rejection.code() as i32,
                    message: rejection.to_string(),
                }),
            }
        }
        None => stream_event::Kind::Rejection(TaskRejection {
            task_id: String::new(),
            code: tonic::Code::InvalidArgument as i32,
            message: "stream request without a task".into(),
        }),
    };
    StreamEvent { kind: Some(kind) }
}

/// Who sent `request`: its address and, over mutual TLS, its certificate.
fn peer<T>(request: &Request<T>) -> Peer {
    Peer {
        ip: request.remote_addr().map(|a| a.ip()),
        certificate: request
            .peer_certs()
            .and_then(|chain| ClientCertificate::from_chain(&chain)),
    }
}

/// The caller's deadline from the `grpc-timeout` header, if it sent one; a malformed header is
/// the task's first problem (INVALID_ARGUMENT).
fn grpc_timeout(metadata: &tonic::metadata::MetadataMap) -> Result<Option<Duration>, Rejection> {
    metadata
        .get("grpc-timeout")
        .map(|value| crate::pipeline::validate::grpc_timeout(value.as_bytes()))
        .transpose()
}
