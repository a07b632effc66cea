//! Admission of connections and calls on every listener (intake, management, metrics, the remote
//! signer), so that no unauthenticated sender can hold what honest clients need.
//!
//! A listener's [`Gate`] bounds the connections it holds at once, and those from one source
//! address; a connection over either bound is closed as soon as it is accepted. An admitted
//! connection ([`Guarded`]) must send its first bytes — the HTTP/2 preface, a TLS ClientHello, an
//! HTTP request line — within the handshake timeout, and is closed once nothing has been read
//! from it for the idle timeout (HTTP/2 keepalive PINGs answered by a live client count as
//! reads, so a healthy idle aggregator connection stays open). [`CallLimitLayer`] bounds the gRPC
//! calls (HTTP/2 streams) open at once on a listener and from one source, across all their
//! connections: a call over the bound is answered RESOURCE_EXHAUSTED before anything of it is
//! read or buffered. Every refusal is counted in `avsnode_listener_refusals_total` and logged as
//! a warning within a budget per second.
//!
//! # Caveat
//!
//! The bounds are per source address. Many sources together (a botnet, or an attacker who owns
//! many addresses) can still fill a listener's total; the total keeps the file descriptors and
//! memory they take bounded, and a firewall or proxy in front is the tool for more than that.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use avsnode_metrics::{IntCounter, IntGauge, Metrics};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::{Instant, Sleep};
use tokio_stream::wrappers::ReceiverStream;
use tonic::body::Body;
use tonic::codegen::{Bytes, Service, http};
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};

use avsnode_metrics::WarningBudget;

/// Bytes a connection must send within the handshake timeout: the 24-byte HTTP/2 preface. A TLS
/// ClientHello is longer.
pub const HTTP2_PREFACE_LEN: usize = 24;

/// Bytes an HTTP/1 client must send within the handshake timeout (`GET / HTTP/1.1\r\n` is 16).
pub const HTTP1_REQUEST_LINE_MIN: usize = 16;

/// A listener's admitted connections, as tonic's `serve_with_incoming` takes them.
pub type Connections = ReceiverStream<io::Result<Guarded<TcpStream>>>;

/// What one listener admits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Connections held at once.
    pub max_connections: usize,
    /// Connections held at once from one source address.
    pub max_per_source: usize,
    /// How long a connection may take to send its first [`preface_len`](Self::preface_len) bytes.
    pub handshake_timeout: Duration,
    /// How many bytes that is.
    pub preface_len: usize,
    /// How long a connection may go without a byte read before it is closed.
    pub idle_timeout: Duration,
}

/// Why a connection or call was refused (the metric's `reason` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(usize)]
enum Refusal {
    ListenerFull,
    SourceFull,
    Handshake,
    Idle,
    CallsFull,
    SourceCallsFull,
}

impl Refusal {
    const ALL: [Refusal; 6] = [
        Refusal::ListenerFull,
        Refusal::SourceFull,
        Refusal::Handshake,
        Refusal::Idle,
        Refusal::CallsFull,
        Refusal::SourceCallsFull,
    ];

    fn label(self) -> &'static str {
        match self {
            Refusal::ListenerFull => "listener_full",
            Refusal::SourceFull => "source_full",
            Refusal::Handshake => "handshake_timeout",
            Refusal::Idle => "idle_timeout",
            Refusal::CallsFull => "calls_full",
            Refusal::SourceCallsFull => "source_calls_full",
        }
    }
}

/// What a listener counts its refusals with: its name, its series (looked up once: a flood makes
/// thousands of refusals a second) and the warning budget.
struct Reporter {
    /// The listener's name, for logs and the metric label (`intake`, `management`, …).
    name: &'static str,
    series: Option<Series>,
    warnings: WarningBudget,
}

struct Series {
    refusals: [IntCounter; Refusal::ALL.len()],
    open: IntGauge,
}

impl Reporter {
    fn new(name: &'static str, metrics: Option<Arc<Metrics>>) -> Reporter {
        let series = metrics.map(|m| {
            let open = m.connections_open.with_label_values(&[name]);
            open.set(0);
            Series {
                refusals: Refusal::ALL
                    .map(|r| m.listener_refusals.with_label_values(&[name, r.label()])),
                open,
            }
        });
        Reporter {
            name,
            series,
            warnings: WarningBudget::new("listener", 10),
        }
    }

    fn refused(&self, refusal: Refusal, peer: Option<SocketAddr>, why: impl fmt::Display) {
        if let Some(series) = &self.series {
            series.refusals[refusal as usize].inc();
        }
        let peer = peer.map(|p| p.to_string()).unwrap_or_default();
        self.warnings.warn(|| {
            tracing::warn!(
                listener = self.name,
                peer,
                reason = refusal.label(),
                "{why}"
            );
        });
    }
}

/// A count of what is open, in all and by source address, within two bounds.
struct Bounds {
    max_total: usize,
    max_per_source: usize,
    open: Mutex<Open>,
}

#[derive(Default)]
struct Open {
    total: usize,
    by_source: HashMap<Option<IpAddr>, usize>,
}

impl Bounds {
    fn new(max_total: usize, max_per_source: usize) -> Arc<Bounds> {
        Arc::new(Bounds {
            max_total,
            max_per_source,
            open: Mutex::default(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Open> {
        // Counters only; a panic elsewhere cannot leave them half-updated.
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// One more from `source`; `Err(true)` when the total is at its bound, `Err(false)` when the
    /// source is.
    fn enter(self: &Arc<Self>, source: Option<IpAddr>) -> Result<Entered, bool> {
        let mut open = self.lock();
        let from_source = open.by_source.get(&source).copied().unwrap_or(0);
        if open.total >= self.max_total {
            return Err(true);
        }
        if from_source >= self.max_per_source {
            return Err(false);
        }
        open.total += 1;
        open.by_source.insert(source, from_source + 1);
        Ok(Entered {
            bounds: self.clone(),
            source,
        })
    }
}

/// One place taken in [`Bounds`], given back when dropped.
struct Entered {
    bounds: Arc<Bounds>,
    source: Option<IpAddr>,
}

impl Drop for Entered {
    fn drop(&mut self) {
        let mut open = self.bounds.lock();
        open.total = open.total.saturating_sub(1);
        if let Some(n) = open.by_source.get_mut(&self.source) {
            *n -= 1;
            if *n == 0 {
                open.by_source.remove(&self.source);
            }
        }
    }
}

/// The connection admission of one listener. Cheap to clone.
#[derive(Clone)]
pub struct Gate {
    inner: Arc<GateInner>,
}

struct GateInner {
    limits: ConnectionLimits,
    bounds: Arc<Bounds>,
    reporter: Reporter,
}

impl fmt::Debug for Gate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Gate")
            .field("listener", &self.inner.reporter.name)
            .field("limits", &self.inner.limits)
            .field("open", &self.open())
            .finish()
    }
}

impl Gate {
    /// The gate of the listener `name`; `metrics` counts its refusals and open connections.
    pub fn new(
        name: &'static str,
        limits: ConnectionLimits,
        metrics: Option<Arc<Metrics>>,
    ) -> Gate {
        Gate {
            inner: Arc::new(GateInner {
                limits,
                bounds: Bounds::new(limits.max_connections, limits.max_per_source),
                reporter: Reporter::new(name, metrics),
            }),
        }
    }

    /// Connections held now.
    pub fn open(&self) -> usize {
        self.inner.bounds.lock().total
    }

    /// Admits `stream` from `peer`, or closes it (dropped) when the listener or the source is at
    /// its bound.
    pub fn admit(&self, stream: TcpStream, peer: SocketAddr) -> Option<Guarded<TcpStream>> {
        let limits = self.inner.limits;
        let entered = match self.inner.bounds.enter(Some(peer.ip())) {
            Ok(entered) => entered,
            Err(listener_full) => {
                let (refusal, why) = if listener_full {
                    let why = format!(
                        "connection refused: the listener holds its limit of {} connections",
                        limits.max_connections
                    );
                    (Refusal::ListenerFull, why)
                } else {
                    let why = format!(
                        "connection refused: {} holds its limit of {} connections",
                        peer.ip(),
                        limits.max_per_source
                    );
                    (Refusal::SourceFull, why)
                };
                self.inner.reporter.refused(refusal, Some(peer), why);
                // A reset, not a close: no FIN exchange and no TIME_WAIT entry for each of a
                // flood's connections.
                let _ = stream.set_zero_linger();
                return None;
            }
        };
        if let Some(series) = &self.inner.reporter.series {
            series.open.inc();
        }
        let _ = stream.set_nodelay(true);
        let now = Instant::now();
        Some(Guarded {
            inner: stream,
            admission: Admission {
                gate: self.inner.clone(),
                peer,
                _entered: entered,
            },
            preface: (limits.preface_len > 0).then(|| Preface {
                left: limits.preface_len,
                deadline: Box::pin(tokio::time::sleep_until(now + limits.handshake_timeout)),
            }),
            idle: Box::pin(tokio::time::sleep_until(now + limits.idle_timeout)),
            last_read: now,
        })
    }

    /// The admitted connections of `listener`, for tonic's `serve_with_incoming`: accept errors
    /// (out of file descriptors, say) are logged and retried after a pause, never the end. The
    /// listener closes when the server drops the stream.
    pub fn incoming(self, listener: TcpListener) -> Connections {
        let (sender, receiver) = mpsc::channel(64);
        let mut listener = GatedListener::new(listener, self);
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    (admitted, _) = axum::serve::Listener::accept(&mut listener) => {
                        if sender.send(Ok(admitted)).await.is_err() {
                            return;
                        }
                    }
                    () = sender.closed() => return,
                }
            }
        });
        ReceiverStream::new(receiver)
    }
}

/// One admitted connection's place in its gate.
struct Admission {
    gate: Arc<GateInner>,
    peer: SocketAddr,
    _entered: Entered,
}

impl Drop for Admission {
    fn drop(&mut self) {
        if let Some(series) = &self.gate.reporter.series {
            series.open.dec();
        }
    }
}

struct Preface {
    left: usize,
    deadline: Pin<Box<Sleep>>,
}

/// An admitted connection: its place in the gate, the handshake deadline and the idle timer.
pub struct Guarded<S> {
    inner: S,
    admission: Admission,
    preface: Option<Preface>,
    idle: Pin<Box<Sleep>>,
    last_read: Instant,
}

impl<S> fmt::Debug for Guarded<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Guarded")
            .field("listener", &self.admission.gate.reporter.name)
            .field("peer", &self.admission.peer)
            .finish_non_exhaustive()
    }
}

impl<S> Guarded<S> {
    /// Closes the connection for `refusal` (the error ends it).
    fn close(&self, refusal: Refusal) -> io::Error {
        let limits = self.admission.gate.limits;
        let why = match refusal {
            Refusal::Handshake => format!(
                "connection closed: no handshake within {}",
                humantime::format_duration(limits.handshake_timeout)
            ),
            _ => format!(
                "connection closed: nothing received for {}",
                humantime::format_duration(limits.idle_timeout)
            ),
        };
        self.admission
            .gate
            .reporter
            .refused(refusal, Some(self.admission.peer), &why);
        io::Error::new(io::ErrorKind::TimedOut, why)
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Guarded<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let read = buf.filled().len() - before;
                if read > 0 {
                    this.last_read = Instant::now();
                    if let Some(preface) = &mut this.preface {
                        preface.left = preface.left.saturating_sub(read);
                        if preface.left == 0 {
                            this.preface = None;
                        }
                    }
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                if let Some(preface) = &mut this.preface
                    && preface.deadline.as_mut().poll(cx).is_ready()
                {
                    return Poll::Ready(Err(this.close(Refusal::Handshake)));
                }
                // Reads only note their time; a timer that fires early is set again from the
                // last read (cheaper than moving it on every read).
                let idle_timeout = this.admission.gate.limits.idle_timeout;
                while this.idle.as_mut().poll(cx).is_ready() {
                    let due = this.last_read + idle_timeout;
                    if due <= Instant::now() {
                        return Poll::Ready(Err(this.close(Refusal::Idle)));
                    }
                    this.idle.as_mut().reset(due);
                }
                Poll::Pending
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Guarded<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

impl tonic::transport::server::Connected for Guarded<TcpStream> {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

/// A listener whose connections pass a [`Gate`]; also an axum listener (the metrics server).
#[derive(Debug)]
pub struct GatedListener {
    listener: TcpListener,
    gate: Gate,
}

impl GatedListener {
    /// `listener`'s connections through `gate`.
    pub fn new(listener: TcpListener, gate: Gate) -> GatedListener {
        GatedListener { listener, gate }
    }
}

impl axum::serve::Listener for GatedListener {
    type Io = Guarded<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.listener.accept().await {
                Ok((stream, peer)) => {
                    if let Some(admitted) = self.gate.admit(stream, peer) {
                        return (admitted, peer);
                    }
                }
                Err(e) => {
                    // Out of file descriptors, usually: wait for some to be given back.
                    let name = self.gate.inner.reporter.name;
                    self.gate.inner.reporter.warnings.warn(|| {
                        tracing::warn!(listener = name, error = %e, "accept failed; retrying");
                    });
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }
}

/// Bounds the gRPC calls open at once on one listener, and from one source address across its
/// connections (a tower layer for tonic's server). Each call holds its place until its response
/// body ends.
#[derive(Clone)]
pub struct CallLimitLayer {
    bounds: Arc<Bounds>,
    reporter: Arc<Reporter>,
}

impl fmt::Debug for CallLimitLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CallLimitLayer")
            .field("listener", &self.reporter.name)
            .field("max_calls", &self.bounds.max_total)
            .field("max_per_source", &self.bounds.max_per_source)
            .finish()
    }
}

impl CallLimitLayer {
    /// At most `max_calls` calls open on the listener `name`, `max_per_source` from one address.
    pub fn new(
        name: &'static str,
        max_calls: usize,
        max_per_source: usize,
        metrics: Option<Arc<Metrics>>,
    ) -> CallLimitLayer {
        CallLimitLayer {
            bounds: Bounds::new(max_calls, max_per_source),
            reporter: Arc::new(Reporter::new(name, metrics)),
        }
    }
}

impl<S> tower::Layer<S> for CallLimitLayer {
    type Service = CallLimit<S>;

    fn layer(&self, inner: S) -> CallLimit<S> {
        CallLimit {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service [`CallLimitLayer`] makes.
#[derive(Clone)]
pub struct CallLimit<S> {
    inner: S,
    layer: CallLimitLayer,
}

impl<S> fmt::Debug for CallLimit<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.layer.fmt(f)
    }
}

/// The remote address of a call, over plain TCP or TLS.
fn remote_addr<B>(request: &http::Request<B>) -> Option<SocketAddr> {
    let extensions = request.extensions();
    extensions
        .get::<TcpConnectInfo>()
        .and_then(TcpConnectInfo::remote_addr)
        .or_else(|| {
            extensions
                .get::<TlsConnectInfo<TcpConnectInfo>>()
                .and_then(|info| info.get_ref().remote_addr())
        })
}

impl<S> Service<http::Request<Body>> for CallLimit<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let peer = remote_addr(&request);
        let bounds = &self.layer.bounds;
        match bounds.enter(peer.map(|p| p.ip())) {
            Ok(entered) => {
                let response = self.inner.call(request);
                Box::pin(async move {
                    let response = response.await?;
                    Ok(response.map(|body| {
                        Body::new(HeldBody {
                            body,
                            _entered: entered,
                        })
                    }))
                })
            }
            Err(listener_full) => {
                let (refusal, status) = if listener_full {
                    (
                        Refusal::CallsFull,
                        tonic::Status::resource_exhausted(format!(
                            "the node holds its limit of {} open calls; retry later",
                            bounds.max_total
                        )),
                    )
                } else {
                    (
                        Refusal::SourceCallsFull,
                        tonic::Status::resource_exhausted(format!(
                            "this address holds its limit of {} open calls; close some first",
                            bounds.max_per_source
                        )),
                    )
                };
                self.layer.reporter.refused(
                    refusal,
                    peer,
                    format!("call refused: {}", status.message()),
                );
                Box::pin(std::future::ready(Ok(status.into_http())))
            }
        }
    }
}

/// A response body that holds its call's place until it ends.
struct HeldBody {
    body: Body,
    _entered: Entered,
}

impl tonic::codegen::Body for HeldBody {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// Connections the kernel queues for a listener before it accepts them: a flood of connections
/// that are closed as soon as they are accepted keeps the queue busy, and with tokio's default of
/// 1,024 an honest client's SYN was dropped and retried a second later.
const LISTEN_BACKLOG: u32 = 4096;

/// Binds a listener on `addr` with [`LISTEN_BACKLOG`] (capped by the kernel's `somaxconn`).
pub fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Raises this process's soft limit on open files to its hard limit (systemd's default soft
/// limit is 1024: a few hundred sockets short of what a node under attack must be able to
/// refuse), and returns the limit in force.
pub fn raise_open_files_limit() -> u64 {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    let Some(current) = limit.current else {
        return u64::MAX;
    };
    let wanted = limit.maximum.unwrap_or(u64::MAX).min(1 << 20);
    if wanted > current
        && setrlimit(
            Resource::Nofile,
            Rlimit {
                current: Some(wanted),
                maximum: limit.maximum,
            },
        )
        .is_ok()
    {
        return wanted;
    }
    current
}
