//! `--garbage`: a performer whose `ExecuteTask` answers are not a `TaskResponse`.
//!
//! The fault is on the wire, below the generated `PerformerService` code, which can only send
//! well-formed messages: [`Garbled`] wraps the generated server, answers `ExecuteTask` itself and
//! passes every other method (`StartSync`) through. Health checks are a separate service and keep
//! saying SERVING, so the node keeps sending tasks.

use std::convert::Infallible;
use std::future::Ready;
use std::task::{Context, Poll};

use prost::bytes::{Buf, BufMut};
use tonic::body::Body;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::http::{self, HeaderValue, header};
use tonic::codegen::{BoxFuture, Service};
use tonic::server::{Grpc, NamedService, UnaryService};
use tonic::{Request, Response, Status};

/// What a performer with `--garbage` answers `ExecuteTask` with. Acts on the wire, in
/// [`serve`](crate::serve): [`ExamplePerformer`](crate::ExamplePerformer) itself is unaffected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Garbage {
    /// A well-framed gRPC message, with grpc-status OK, whose bytes are not a `TaskResponse`.
    Protobuf,
    /// An HTTP/2 body that is not gRPC framing at all, without grpc-status.
    Unframed,
}

/// The message [`Garbage::Protobuf`] sends. Protobuf decoders skip fields they do not know, so
/// merely unexpected bytes could still decode; this opens with field 1 (`task_id`) in wire type 7,
/// which does not exist, so every decoder fails at the first byte.
pub const NOT_A_TASK_RESPONSE: &[u8] = b"\x0fnot a TaskResponse";

/// The body [`Garbage::Unframed`] sends. A gRPC body is frames of a compression flag (0 or 1) and
/// a length; this opens with `<` (0x3c), an invalid flag.
pub const UNFRAMED_BODY: &str = "<html><body>not a gRPC response</body></html>\n";

/// A `PerformerService` server whose `ExecuteTask` answers garbage of one [`Garbage`] kind.
#[derive(Debug, Clone)]
pub(crate) struct Garbled<S> {
    pub(crate) kind: Garbage,
    pub(crate) inner: S,
}

impl<S: NamedService> NamedService for Garbled<S> {
    const NAME: &'static str = S::NAME;
}

impl<S> Service<http::Request<Body>> for Garbled<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>
        + NamedService,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Infallible>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let method = request
            .uri()
            .path()
            .strip_prefix('/')
            .and_then(|path| path.strip_prefix(S::NAME));
        if method != Some("/ExecuteTask") {
            return Box::pin(self.inner.call(request));
        }
        match self.kind {
            Garbage::Protobuf => {
                Box::pin(async move { Ok(Grpc::new(RawCodec).unary(Answer, request).await) })
            }
            Garbage::Unframed => {
                let mut response = http::Response::new(Body::new(String::from(UNFRAMED_BODY)));
                response.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/grpc"),
                );
                Box::pin(std::future::ready(Ok(response)))
            }
        }
    }
}

/// Answers every request with [`NOT_A_TASK_RESPONSE`].
struct Answer;

impl UnaryService<()> for Answer {
    type Response = &'static [u8];
    type Future = Ready<Result<Response<&'static [u8]>, Status>>;

    fn call(&mut self, _request: Request<()>) -> Self::Future {
        std::future::ready(Ok(Response::new(NOT_A_TASK_RESPONSE)))
    }
}

/// Sends messages as the raw bytes given and ignores the request: tonic frames them and adds
/// grpc-status OK, as for any answer.
#[derive(Debug, Clone, Copy)]
struct RawCodec;

impl Codec for RawCodec {
    type Encode = &'static [u8];
    type Decode = ();
    type Encoder = Self;
    type Decoder = Self;

    fn encoder(&mut self) -> Self {
        Self
    }

    fn decoder(&mut self) -> Self {
        Self
    }
}

impl Encoder for RawCodec {
    type Item = &'static [u8];
    type Error = Status;

    fn encode(&mut self, item: Self::Item, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = ();
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<()>, Status> {
        src.advance(src.remaining());
        Ok(Some(()))
    }
}
