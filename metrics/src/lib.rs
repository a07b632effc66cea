//! Every metric avsnode exports, declared in one place (DESIGN §8), and the HTTP server that
//! exposes them with the health endpoints.
//!
//! [`Metrics::new`] registers every family at start-up: a registration failure is an error that
//! stops the node, never a silently missing metric. Labels stay low-cardinality — configured AVS
//! addresses (anything else is counted as `unknown`), operator sets, schemes, backends, reasons,
//! stages — never task ids.

mod node_api;
mod warnings;

pub use node_api::{NodeApi, NodeHealth, NodeReport, NodeService, SPEC_VERSION, ServiceStatus};
pub use warnings::WarningBudget;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

pub use prometheus::{Error, Histogram as PromHistogram, HistogramTimer, IntCounter, IntGauge};

/// Latency buckets from 0.5 ms to 30 s: task stages span a cached answer (sub-millisecond) to a
/// performer running against a 10 s deadline.
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
/// Signing and ledger commits: 10 µs to 1 s.
const FAST_BUCKETS: &[f64] = &[
    0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.25,
    1.0,
];

/// The version with the commit it was built from, e.g. `0.1.0 (1a2b3c4d5e6f)` (`avsnode
/// --version`, `/eigen/node`).
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (",
    env!("AVSNODE_GIT_COMMIT"),
    ")"
);

/// The label value for an AVS this node does not serve (keeps cardinality bounded).
pub const UNKNOWN_AVS: &str = "unknown";

/// Every metric family of the node.
#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Registry,
    /// `avsnode_tasks_received_total{avs, intake}`.
    pub tasks_received: IntCounterVec,
    /// `avsnode_tasks_completed_total{avs, outcome}`: signed, cached, rejected, failed.
    pub tasks_completed: IntCounterVec,
    /// `avsnode_task_rejections_total{avs, reason}`.
    pub task_rejections: IntCounterVec,
    /// `avsnode_task_stage_seconds{avs, stage}`: validate, queue, execute, sign, total.
    pub task_stage_seconds: HistogramVec,
    /// `avsnode_tasks_inflight{avs}`: tasks in the performer.
    pub tasks_inflight: IntGaugeVec,
    /// `avsnode_queue_depth{avs}`: tasks waiting for a performer slot.
    pub queue_depth: IntGaugeVec,
    /// `avsnode_streams_open`.
    pub streams_open: IntGauge,
    /// `avsnode_performer_up{avs, performer}`: 1 when healthy.
    pub performer_up: IntGaugeVec,
    /// `avsnode_performer_restarts_total{avs}`.
    pub performer_restarts: IntCounterVec,
    /// `avsnode_performer_deployments_total{avs, result}`.
    pub performer_deployments: IntCounterVec,
    /// `avsnode_signatures_total{scheme, backend, result}`.
    pub signatures: IntCounterVec,
    /// `avsnode_sign_seconds{scheme, backend}`.
    pub sign_seconds: HistogramVec,
    /// `avsnode_aggregator_signature_batch_size{scheme}`: how many aggregator signatures each
    /// check verified together (1 on an idle node; more while tasks wait under load).
    pub signature_batch_size: HistogramVec,
    /// `avsnode_ledger_records`.
    pub ledger_records: IntGauge,
    /// `avsnode_ledger_conflicts_total{avs}`.
    pub ledger_conflicts: IntCounterVec,
    /// `avsnode_ledger_unavailable_total{avs}`: tasks answered UNAVAILABLE because the shared
    /// ledger's database could not be reached (or this replica lost its claim).
    pub ledger_unavailable: IntCounterVec,
    /// `avsnode_ledger_up`: 1 while the ledger answers, 0 while its database is unreachable.
    pub ledger_up: IntGauge,
    /// `avsnode_ledger_commit_seconds`: one observation per durable commit.
    pub ledger_commit_seconds: Histogram,
    /// `avsnode_build_info{version, commit}` = 1.
    pub build_info: IntGaugeVec,
    /// `avsnode_ready`: 1 when `/readyz` would answer ready.
    pub ready: IntGauge,
    /// `avsnode_connections_open{listener}`: connections held by each listener.
    pub connections_open: IntGaugeVec,
    /// `avsnode_listener_refusals_total{listener, reason}`: connections and calls refused or
    /// closed by a listener's limits.
    pub listener_refusals: IntCounterVec,
    /// `avsnode_management_calls_refused_total{reason}`: management calls refused before they
    /// were read (rate_limited) or when challenge tokens ran out (challenges_full).
    pub management_refused: IntCounterVec,
    /// `eigen_performance_score{avs_name}` (AVS node specification): 0–100, from the node's own
    /// outcomes (docs/OPERATING.md "The EigenLayer node API").
    pub performance_score: IntGaugeVec,
    /// `avsnode_chain_rpc_calls_total{endpoint, method, outcome}`: JSON-RPC calls to the chain
    /// (each call of a batch counted), by endpoint index in `chain.rpc_urls`.
    pub chain_rpc_calls: IntCounterVec,
    /// `avsnode_chain_rpc_seconds`: time per HTTP request to the chain (one JSON-RPC batch).
    pub chain_rpc_seconds: Histogram,
    /// `avsnode_chain_cache_total{fact, result}`: chain facts answered from the cache (`hit`) or
    /// read (`miss`).
    pub chain_cache: IntCounterVec,
    /// `avsnode_chain_cache_facts`: facts held.
    pub chain_cache_facts: IntGauge,
    /// `avsnode_chain_head_block`: the newest block an RPC endpoint reported.
    pub chain_head_block: IntGauge,
    /// `avsnode_chain_head_lag_blocks`: blocks between that head and the last one whose logs
    /// were applied.
    pub chain_head_lag: IntGauge,
    /// `avsnode_chain_follower_errors_total`: log-follower rounds that failed.
    pub chain_follower_errors: IntCounter,
    /// `avsnode_chain_reorgs_total`: reorgs seen (cached facts of orphaned blocks dropped).
    pub chain_reorgs: IntCounter,
    /// `avsnode_chain_up`: 1 while an RPC endpoint answered within `chain.serve_cached_for`.
    pub chain_up: IntGauge,
}

impl Metrics {
    /// Declares and registers every family (and the process collector).
    pub fn new() -> Result<Arc<Metrics>, Error> {
        let registry = Registry::new();
        let counter = |name: &str, help: &str, labels: &[&str]| -> Result<IntCounterVec, Error> {
            let c = IntCounterVec::new(Opts::new(name, help), labels)?;
            registry.register(Box::new(c.clone()))?;
            Ok(c)
        };
        let gauge_vec = |name: &str, help: &str, labels: &[&str]| -> Result<IntGaugeVec, Error> {
            let g = IntGaugeVec::new(Opts::new(name, help), labels)?;
            registry.register(Box::new(g.clone()))?;
            Ok(g)
        };
        let gauge = |name: &str, help: &str| -> Result<IntGauge, Error> {
            let g = IntGauge::new(name, help)?;
            registry.register(Box::new(g.clone()))?;
            Ok(g)
        };
        let histogram_vec = |name: &str,
                             help: &str,
                             labels: &[&str],
                             buckets: &[f64]|
         -> Result<HistogramVec, Error> {
            let h = HistogramVec::new(
                HistogramOpts::new(name, help).buckets(buckets.to_vec()),
                labels,
            )?;
            registry.register(Box::new(h.clone()))?;
            Ok(h)
        };

        let metrics = Metrics {
            tasks_received: counter(
                "avsnode_tasks_received_total",
                "Tasks received, by AVS and intake (unary, stream).",
                &["avs", "intake"],
            )?,
            tasks_completed: counter(
                "avsnode_tasks_completed_total",
                "Tasks answered, by outcome: signed (newly), cached (from the ledger), rejected (refused by a check), failed (the performer or the node failed).",
                &["avs", "outcome"],
            )?,
            task_rejections: counter(
                "avsnode_task_rejections_total",
                "Tasks not signed, by reason (see docs/OPERATING.md, Rejections).",
                &["avs", "reason"],
            )?,
            task_stage_seconds: histogram_vec(
                "avsnode_task_stage_seconds",
                "Time per pipeline stage: validate, queue, execute, sign, total.",
                &["avs", "stage"],
                LATENCY_BUCKETS,
            )?,
            tasks_inflight: gauge_vec(
                "avsnode_tasks_inflight",
                "Tasks in the performer.",
                &["avs"],
            )?,
            queue_depth: gauge_vec(
                "avsnode_queue_depth",
                "Tasks waiting for a performer slot.",
                &["avs"],
            )?,
            streams_open: gauge("avsnode_streams_open", "Open TaskStream streams.")?,
            performer_up: gauge_vec(
                "avsnode_performer_up",
                "1 when the AVS's performer is healthy, 0 otherwise.",
                &["avs", "performer"],
            )?,
            performer_restarts: counter(
                "avsnode_performer_restarts_total",
                "Performer restarts after a crash or failed health checks.",
                &["avs"],
            )?,
            performer_deployments: counter(
                "avsnode_performer_deployments_total",
                "Performer deployments, by result.",
                &["avs", "result"],
            )?,
            signatures: counter(
                "avsnode_signatures_total",
                "Signatures made, by scheme, backend and result.",
                &["scheme", "backend", "result"],
            )?,
            sign_seconds: histogram_vec(
                "avsnode_sign_seconds",
                "Time to make a task's result and auth signatures.",
                &["scheme", "backend"],
                FAST_BUCKETS,
            )?,
            signature_batch_size: histogram_vec(
                "avsnode_aggregator_signature_batch_size",
                "Aggregator signatures verified together in one check, by scheme (batches form while tasks wait).",
                &["scheme"],
                &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0],
            )?,
            ledger_records: gauge("avsnode_ledger_records", "Records in the sign-once ledger.")?,
            ledger_conflicts: counter(
                "avsnode_ledger_conflicts_total",
                "Tasks refused because the ledger holds another digest for them (never signed twice).",
                &["avs"],
            )?,
            ledger_unavailable: counter(
                "avsnode_ledger_unavailable_total",
                "Tasks answered UNAVAILABLE because the shared ledger's database could not be reached.",
                &["avs"],
            )?,
            ledger_up: gauge(
                "avsnode_ledger_up",
                "1 while the sign-once ledger answers, 0 while its database is unreachable.",
            )?,
            ledger_commit_seconds: {
                let h = Histogram::with_opts(
                    HistogramOpts::new(
                        "avsnode_ledger_commit_seconds",
                        "Time of each durable ledger commit (group commit: one per batch).",
                    )
                    .buckets(FAST_BUCKETS.to_vec()),
                )?;
                registry.register(Box::new(h.clone()))?;
                h
            },
            build_info: gauge_vec(
                "avsnode_build_info",
                "Build information; always 1.",
                &["version", "commit"],
            )?,
            ready: gauge("avsnode_ready", "1 when the node is ready (see /readyz).")?,
            connections_open: gauge_vec(
                "avsnode_connections_open",
                "Connections each listener holds (intake, management, metrics).",
                &["listener"],
            )?,
            listener_refusals: counter(
                "avsnode_listener_refusals_total",
                "Connections and calls refused or closed by a listener's limits, by reason: listener_full and source_full (connections held by the listener, from one address), handshake_timeout, idle_timeout, calls_full and source_calls_full (calls open at once).",
                &["listener", "reason"],
            )?,
            management_refused: counter(
                "avsnode_management_calls_refused_total",
                "Management calls refused before authentication, by reason: rate_limited (calls from one address), challenges_full.",
                &["reason"],
            )?,
            performance_score: gauge_vec(
                "eigen_performance_score",
                "0-100: of the AVS's tasks answered in the last 5 minutes, the share not failed by the node or its performer (100 with none answered and the performer up, 0 with it down); see docs/OPERATING.md.",
                &["avs_name"],
            )?,
            chain_rpc_calls: IntCounterVec::new(
                Opts::new(
                    "avsnode_chain_rpc_calls_total",
                    "JSON-RPC calls to the chain, by endpoint (index in chain.rpc_urls), method and outcome: ok, reverted, error (the endpoint answered with an error), unreachable.",
                ),
                &["endpoint", "method", "outcome"],
            )?,
            chain_rpc_seconds: Histogram::with_opts(
                HistogramOpts::new(
                    "avsnode_chain_rpc_seconds",
                    "Time per HTTP request to the chain RPC (one JSON-RPC batch).",
                )
                .buckets(LATENCY_BUCKETS.to_vec()),
            )?,
            chain_cache: IntCounterVec::new(
                Opts::new(
                    "avsnode_chain_cache_total",
                    "Chain facts a task needed, answered from the cache (hit) or read from the chain (miss), by fact.",
                ),
                &["fact", "result"],
            )?,
            chain_cache_facts: IntGauge::new("avsnode_chain_cache_facts", "Chain facts cached.")?,
            chain_head_block: IntGauge::new(
                "avsnode_chain_head_block",
                "The newest block the chain RPC reported.",
            )?,
            chain_head_lag: IntGauge::new(
                "avsnode_chain_head_lag_blocks",
                "Blocks between the chain head and the last block whose logs the follower applied.",
            )?,
            chain_follower_errors: IntCounter::new(
                "avsnode_chain_follower_errors_total",
                "Rounds of the chain log follower that failed (RPC unreachable or an error).",
            )?,
            chain_reorgs: IntCounter::new(
                "avsnode_chain_reorgs_total",
                "Chain reorgs seen by the follower (facts read at orphaned blocks dropped).",
            )?,
            chain_up: IntGauge::new(
                "avsnode_chain_up",
                "1 while a chain RPC endpoint answered within chain.serve_cached_for (cached facts serve), 0 after.",
            )?,
            registry,
        };
        metrics
            .build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION"), env!("AVSNODE_GIT_COMMIT")])
            .set(1);
        metrics.registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;
        Ok(Arc::new(metrics))
    }

    /// Registers the `avsnode_chain_*` families: only a node with `[chain]` exports them (a node
    /// without one reads nothing from chain, and `avsnode_chain_up` would alert for nothing).
    pub fn register_chain(&self) -> Result<(), Error> {
        self.registry
            .register(Box::new(self.chain_rpc_calls.clone()))?;
        self.registry
            .register(Box::new(self.chain_rpc_seconds.clone()))?;
        self.registry.register(Box::new(self.chain_cache.clone()))?;
        for gauge in [
            &self.chain_cache_facts,
            &self.chain_head_block,
            &self.chain_head_lag,
            &self.chain_up,
        ] {
            self.registry.register(Box::new(gauge.clone()))?;
        }
        for counter in [&self.chain_follower_errors, &self.chain_reorgs] {
            self.registry.register(Box::new(counter.clone()))?;
        }
        Ok(())
    }

    /// The Prometheus text exposition of every family.
    pub fn encode(&self) -> String {
        let mut out = Vec::new();
        // Encoding into a Vec fails only on a malformed family, which `new` rules out.
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            return format!("# encoding failed: {e}\n");
        }
        String::from_utf8(out).unwrap_or_default()
    }

    /// Creates every counter series of a configured AVS at zero, so the first increment is seen
    /// by `increase()`/`rate()` (a series that appears already at 1 hides it — and with it the
    /// first restart of a crash loop or the first ledger conflict).
    pub fn init_avs(&self, avs: &str) {
        for intake in ["unary", "stream"] {
            self.tasks_received.with_label_values(&[avs, intake]);
        }
        for outcome in ["signed", "cached", "rejected", "failed"] {
            self.tasks_completed.with_label_values(&[avs, outcome]);
        }
        self.ledger_conflicts.with_label_values(&[avs]);
        self.ledger_unavailable.with_label_values(&[avs]);
        self.performer_restarts.with_label_values(&[avs]);
        for result in ["success", "failed"] {
            self.performer_deployments.with_label_values(&[avs, result]);
        }
        self.tasks_inflight.with_label_values(&[avs]);
        self.queue_depth.with_label_values(&[avs]);
    }

    /// A timer guard for one stage of one AVS: observes on drop.
    pub fn stage_timer(&self, avs: &str, stage: &str) -> HistogramTimer {
        self.task_stage_seconds
            .with_label_values(&[avs, stage])
            .start_timer()
    }
}

/// Whether the node is ready, and if not, which parts are not.
pub type Readiness = Arc<dyn Fn() -> Result<(), Vec<String>> + Send + Sync>;

/// Serves `/metrics`, `/healthz` (the process is alive), `/readyz` (ready, or 503 with the
/// parts that are not) and the EigenLayer AVS node API under `/eigen` (from `node`) on
/// `listener` until `shutdown` resolves. `listener` is any axum listener: the node passes one that
/// bounds its connections.
pub async fn serve<L>(
    listener: L,
    metrics: Arc<Metrics>,
    readiness: Readiness,
    node: NodeApi,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()>
where
    L: axum::serve::Listener,
    L::Addr: std::fmt::Debug,
{
    let ready_metrics = metrics.clone();
    let app = Router::new()
        .route(
            "/metrics",
            get(move || {
                let metrics = metrics.clone();
                async move {
                    (
                        [(
                            header::CONTENT_TYPE,
                            "text/plain; version=0.0.4; charset=utf-8",
                        )],
                        metrics.encode(),
                    )
                }
            }),
        )
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/readyz",
            get(move || {
                let readiness = readiness.clone();
                let metrics = ready_metrics.clone();
                async move {
                    match readiness() {
                        Ok(()) => {
                            metrics.ready.set(1);
                            (StatusCode::OK, "ready\n".to_owned()).into_response()
                        }
                        Err(parts) => {
                            metrics.ready.set(0);
                            let body = parts
                                .iter()
                                .map(|p| format!("not ready: {p}\n"))
                                .collect::<String>();
                            (StatusCode::SERVICE_UNAVAILABLE, body).into_response()
                        }
                    }
                }
            }),
        )
        .merge(node_api::routes(node));
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

/// The address the metrics listener binds by default: loopback only.
pub fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9464))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_family_is_registered_and_named_as_designed() {
        let m = Metrics::new().unwrap();
        m.tasks_received
            .with_label_values(&["0xabc", "unary"])
            .inc();
        m.tasks_completed
            .with_label_values(&["0xabc", "signed"])
            .inc();
        m.task_rejections
            .with_label_values(&["0xabc", "stale"])
            .inc();
        m.stage_timer("0xabc", "total").observe_duration();
        m.tasks_inflight.with_label_values(&["0xabc"]).set(1);
        m.queue_depth.with_label_values(&["0xabc"]).set(1);
        m.performer_up
            .with_label_values(&["0xabc", "process"])
            .set(1);
        m.performer_restarts.with_label_values(&["0xabc"]).inc();
        m.performer_deployments
            .with_label_values(&["0xabc", "ok"])
            .inc();
        m.signatures
            .with_label_values(&["ecdsa", "local", "ok"])
            .inc();
        m.sign_seconds
            .with_label_values(&["ecdsa", "local"])
            .observe(0.0001);
        m.ledger_conflicts.with_label_values(&["0xabc"]).inc();
        m.ledger_unavailable.with_label_values(&["0xabc"]).inc();
        m.ledger_commit_seconds.observe(0.001);
        let text = m.encode();
        for name in [
            "avsnode_tasks_received_total",
            "avsnode_tasks_completed_total",
            "avsnode_task_rejections_total",
            "avsnode_task_stage_seconds_bucket",
            "avsnode_tasks_inflight",
            "avsnode_queue_depth",
            "avsnode_streams_open",
            "avsnode_performer_up",
            "avsnode_performer_restarts_total",
            "avsnode_performer_deployments_total",
            "avsnode_signatures_total",
            "avsnode_sign_seconds_bucket",
            "avsnode_ledger_records",
            "avsnode_ledger_conflicts_total",
            "avsnode_ledger_unavailable_total",
            "avsnode_ledger_up",
            "avsnode_ledger_commit_seconds_bucket",
            "avsnode_build_info",
            "avsnode_ready",
            "process_resident_memory_bytes",
        ] {
            assert!(
                text.contains(&format!("\n{name}")),
                "{name} missing from:\n{text}"
            );
        }
        // The chain families only once registered (a node with [chain]).
        assert!(!text.contains("avsnode_chain_"), "{text}");
        m.register_chain().unwrap();
        m.chain_rpc_calls
            .with_label_values(&["0", "eth_call", "ok"])
            .inc();
        m.chain_cache.with_label_values(&["key", "hit"]).inc();
        m.chain_rpc_seconds.observe(0.001);
        let text = m.encode();
        for name in [
            "avsnode_chain_rpc_calls_total",
            "avsnode_chain_rpc_seconds_bucket",
            "avsnode_chain_cache_total",
            "avsnode_chain_cache_facts",
            "avsnode_chain_head_block",
            "avsnode_chain_head_lag_blocks",
            "avsnode_chain_follower_errors_total",
            "avsnode_chain_reorgs_total",
            "avsnode_chain_up",
        ] {
            assert!(
                text.contains(&format!("\n{name}")),
                "{name} missing from:\n{text}"
            );
        }
        // The commit is embedded at build time (git, or AVSNODE_GIT_COMMIT, else "unknown").
        let commit = env!("AVSNODE_GIT_COMMIT");
        assert!(!commit.is_empty());
        assert!(text.contains(&format!("commit=\"{commit}\"")), "{text}");
    }

    #[tokio::test]
    async fn endpoints_answer() {
        let m = Metrics::new().unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let ready = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = ready.clone();
        let readiness: Readiness = Arc::new(move || {
            if flag.load(std::sync::atomic::Ordering::SeqCst) {
                Ok(())
            } else {
                Err(vec!["performer 0xabc".into()])
            }
        });
        let node: NodeApi = {
            let flag = ready.clone();
            Arc::new(move || {
                let up = flag.load(std::sync::atomic::Ordering::SeqCst);
                NodeReport {
                    health: if up {
                        NodeHealth::Healthy
                    } else {
                        NodeHealth::PartiallyHealthy
                    },
                    services: vec![NodeService {
                        id: "performer-0xabc".into(),
                        name: "performer \"0xabc\"".into(),
                        description: "the AVS's performer".into(),
                        status: if up {
                            ServiceStatus::Up
                        } else {
                            ServiceStatus::Down
                        },
                    }],
                }
            })
        };
        tokio::spawn(serve(
            listener,
            m.clone(),
            readiness,
            node,
            std::future::pending(),
        ));
        let get = |path: &'static str| async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
            s.write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes())
                .await
                .unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).await.unwrap();
            out
        };
        assert!(get("/healthz").await.starts_with("HTTP/1.0 200"));
        let not_ready = get("/readyz").await;
        assert!(
            not_ready.starts_with("HTTP/1.0 503")
                && not_ready.contains("not ready: performer 0xabc"),
            "{not_ready}"
        );
        assert!(get("/metrics").await.contains("avsnode_ready 0"));
        // The node API.
        assert!(get("/eigen/node/health").await.starts_with("HTTP/1.0 206"));
        assert!(
            get("/eigen/node/services/performer-0xabc/health")
                .await
                .starts_with("HTTP/1.0 503")
        );
        assert!(
            get("/eigen/node/services/nothing/health")
                .await
                .starts_with("HTTP/1.0 404")
        );
        let services = get("/eigen/node/services").await;
        assert!(
            services.contains(r#"{"services":[{"id":"performer-0xabc","name":"performer \"0xabc\"","description":"the AVS's performer","status":"Down"}]}"#),
            "{services}"
        );
        let node = get("/eigen/node").await;
        assert!(
            node.contains(r#""node_name":"avsnode","spec_version":"v0.0.1","node_version":"v"#),
            "{node}"
        );
        assert!(
            get("/eigen/node?version=9.9.9")
                .await
                .starts_with("HTTP/1.0 404")
        );
        ready.store(true, std::sync::atomic::Ordering::SeqCst);
        assert!(get("/readyz").await.starts_with("HTTP/1.0 200"));
        assert!(get("/metrics").await.contains("avsnode_ready 1"));
        assert!(get("/eigen/node/health").await.starts_with("HTTP/1.0 200"));
    }
}
