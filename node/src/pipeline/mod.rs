//! The task pipeline (DESIGN §3.1), one module per stage, in the order a task meets them:
//! [`validate`] (shape, then every cheap check and the aggregator's signature, in §3.1's order),
//! `admission` (the ledger fast path, single flight, the queue for a performer slot), `execute`
//! (the performer call and its output checks) and `sign` (sign-and-commit through the one
//! `Ledger::sign_once`, answering from the committed record). [`rejection`] maps every refusal
//! to its gRPC code and metric label; [`rate_limit`] is the per-aggregator budget that validation
//! spends before the signature check.
//!
//! [`Pipeline::submit`] is the one entry: the intake hands it a submission and gets the answer.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use avsnode_metrics::{Metrics, UNKNOWN_AVS};
use avsnode_performer::PerformerSlot;
use avsnode_proto::executor::{TaskResult, TaskSubmission};
use avsnode_signer::VerifyingKey;
use avsnode_signer::messages::{Address, EcdsaVerifier, ResultCertificate, TaskId};
use rustls_pki_types::DnsName;
use tokio::sync::{Semaphore, watch};
use tracing::{Instrument, debug, error, info_span, warn};

mod admission;
mod execute;
pub mod rate_limit;
pub mod rejection;
mod sign;
pub mod validate;
mod verify;

pub use verify::MAX_BATCH as MAX_SIGNATURE_BATCH;

use crate::config::AvsConfig;
use avsnode_chain::{Chain, OurKey};
use avsnode_ledger::Ledger;
use avsnode_listener::tls::ClientCertificate;
use avsnode_metrics::WarningBudget;
use avsnode_signing::SigningMethod;
use rate_limit::RateLimiter;
use rejection::Rejection;

/// The outcome every caller of one flight receives.
pub type Outcome = Result<TaskResult, Rejection>;

/// One operator set this node signs for.
#[derive(Debug)]
pub struct OperatorSet {
    /// Its id.
    pub id: u32,
    /// The key that signs its results.
    pub key: Arc<SigningMethod>,
    /// The key's ledger id (`SigningMethod::key_id`), computed once: for a local BN254 key it
    /// costs a G2 multiplication, a fifth of the task's own crypto.
    pub key_id: [u8; 32],
    /// What its results are signed under (the scheme's digest, the ECDSA verifier's domain).
    pub certificate: ResultCertificate,
    /// ECDSA sets: the certificate verifier, as a remote signer is told it.
    pub verifier: Option<EcdsaVerifier>,
    /// The key the chain must hold for this operator in this set (with `[chain]`).
    pub chain_key: Option<OurKey>,
}

/// One AVS as the pipeline serves it.
#[derive(Debug)]
pub struct Avs {
    /// Its address.
    pub address: Address,
    /// Its configuration (limits, timeouts).
    pub config: AvsConfig,
    /// Allowed aggregators by address.
    pub aggregators: HashMap<Address, VerifyingKey>,
    /// Operator sets by id.
    pub operator_sets: HashMap<u32, OperatorSet>,
    /// Where its tasks run (swapped by deploys).
    pub performer: Arc<PerformerSlot>,
    slots: Arc<Semaphore>,
    waiting: Arc<AtomicUsize>,
    rate_limiter: Arc<RateLimiter>,
    /// With mutual TLS: the names each aggregator's client certificate must be valid for.
    client_names: HashMap<Address, Vec<DnsName<'static>>>,
    /// The `avs` metric label: the lower-case address.
    label: String,
}

impl Avs {
    /// Assembles an AVS; `max_concurrency` slots, `queue_depth` waiting places.
    pub fn new(
        address: Address,
        config: AvsConfig,
        aggregators: HashMap<Address, VerifyingKey>,
        operator_sets: HashMap<u32, OperatorSet>,
        performer: Arc<PerformerSlot>,
    ) -> Avs {
        let slots = Arc::new(Semaphore::new(config.max_concurrency));
        let label = address.to_string();
        let rate_limiter = Arc::new(RateLimiter::new(
            config.aggregator_rate_limit,
            config.aggregator_burst,
        ));
        let client_names = config
            .aggregators
            .list()
            .iter()
            .map(|a| {
                let names = a
                    .tls_client_names
                    .iter()
                    .map(|n| n.get().0.clone())
                    .collect();
                (*a.address.get(), names)
            })
            .collect();
        Avs {
            rate_limiter,
            client_names,
            address,
            config,
            aggregators,
            operator_sets,
            performer,
            slots,
            waiting: Arc::default(),
            label,
        }
    }

    /// Takes over the running state of `old`, the same AVS before a reload: its performer slots
    /// (resized to this configuration's `max_concurrency`; tasks running keep theirs), its queue
    /// count and, if the limits did not change, its rate-limit buckets.
    pub fn succeed(&mut self, old: &Avs) {
        let (was, now) = (old.config.max_concurrency, self.config.max_concurrency);
        self.slots = old.slots.clone();
        if now > was {
            self.slots.add_permits(now - was);
        } else if now < was {
            // Free slots go at once; slots in use are taken out as their tasks finish.
            let missing = was - now - self.slots.forget_permits(was - now);
            if missing > 0 {
                let slots = self.slots.clone();
                tokio::spawn(async move {
                    if let Ok(permits) = slots.acquire_many_owned(missing as u32).await {
                        permits.forget();
                    }
                });
            }
        }
        self.waiting = old.waiting.clone();
        if (
            old.config.aggregator_rate_limit,
            old.config.aggregator_burst,
        ) == (
            self.config.aggregator_rate_limit,
            self.config.aggregator_burst,
        ) {
            self.rate_limiter = old.rate_limiter.clone();
        }
    }
}

/// Where a task came from: the peer's IP address (rate limits are per source) and, over mutual
/// TLS, its client certificate (an aggregator is bound to its certificate).
#[derive(Debug, Clone, Default)]
pub struct Peer {
    /// The connection's remote IP address.
    pub ip: Option<IpAddr>,
    /// The verified client certificate (mutual TLS only).
    pub certificate: Option<ClientCertificate>,
}

/// Only exact duplicates share a flight: the task message hash `h` covers every signed field, so
/// a request that differs (another reference timestamp, payload, deadline) runs on its own and
/// meets the other in the ledger, which refuses a second digest.
type FlightKey = (Address, u32, TaskId, [u8; 32]);

/// The pipeline: shared by every intake handler.
#[derive(Debug)]
pub struct Pipeline {
    operator: Address,
    /// Swapped whole by a reload; a task keeps the `Avs` it started with.
    avs: RwLock<Arc<HashMap<Address, Arc<Avs>>>>,
    ledger: Ledger,
    /// How long a claim on the shared ledger holds a task (renewed while it runs).
    claim_lease: Duration,
    flights: Mutex<HashMap<FlightKey, watch::Receiver<Option<Outcome>>>>,
    in_flight: AtomicUsize,
    /// Shutdown: new tasks refused once draining; callers still waiting answered UNAVAILABLE once
    /// cancelled.
    stopping: watch::Sender<Stopping>,
    tasks_in_memory: AtomicUsize,
    max_tasks_in_memory: usize,
    /// Aggregator-signature checks: one per core at a time, in batches while tasks wait.
    signatures: verify::SignatureChecks,
    /// With `[chain]`: aggregator keys and membership are read and cached there.
    chain: Option<Arc<Chain>>,
    /// Configured operator sets the chain disagrees with (for `/readyz`), kept current by the
    /// daemon.
    chain_disagreements: Mutex<Vec<String>>,
    warnings: WarningBudget,
    metrics: Arc<Metrics>,
}

impl Pipeline {
    /// A pipeline for `operator` over these AVSs and ledger, holding at most
    /// `max_tasks_in_memory` tasks at once.
    pub fn new(
        operator: Address,
        avs: Vec<Avs>,
        ledger: Ledger,
        claim_lease: Duration,
        chain: Option<Arc<Chain>>,
        metrics: Arc<Metrics>,
        max_tasks_in_memory: usize,
    ) -> Arc<Pipeline> {
        let avs = avs.into_iter().map(|a| (a.address, Arc::new(a))).collect();
        Arc::new(Pipeline {
            operator,
            avs: RwLock::new(Arc::new(avs)),
            ledger,
            claim_lease,
            flights: Mutex::default(),
            in_flight: AtomicUsize::new(0),
            stopping: watch::Sender::new(Stopping::Running),
            tasks_in_memory: AtomicUsize::new(0),
            max_tasks_in_memory,
            signatures: verify::SignatureChecks::new(
                std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get),
                metrics.clone(),
            ),
            chain,
            chain_disagreements: Mutex::default(),
            warnings: WarningBudget::new("rejection", REJECTION_WARNINGS_PER_SECOND),
            metrics,
        })
    }

    /// The chain reader, with `[chain]`.
    pub fn chain(&self) -> Option<&Arc<Chain>> {
        self.chain.as_ref()
    }

    /// Compares every configured operator set with the chain at its head (cached facts, or one
    /// read): what disagrees is kept for `/readyz` and returned.
    pub async fn check_chain(&self) -> Vec<String> {
        let Some(chain) = &self.chain else {
            return Vec::new();
        };
        let mut found = Vec::new();
        for avs in self.avs() {
            for set in avs.operator_sets.values() {
                let Some(key) = &set.chain_key else { continue };
                match chain
                    .check_executor(avs.address, set.id, self.operator, 0, key)
                    .await
                {
                    Ok(()) => {}
                    Err(avsnode_chain::ChainError::Refused(refusal)) => {
                        found.push(format!("chain disagrees: {refusal}"));
                    }
                    // Unavailability is reported on its own (`Chain::status`).
                    Err(avsnode_chain::ChainError::Unavailable(_)) => {}
                }
            }
        }
        found.sort();
        *self
            .chain_disagreements
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = found.clone();
        found
    }

    /// What [`Pipeline::check_chain`] found last.
    pub fn chain_disagreements(&self) -> Vec<String> {
        self.chain_disagreements
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The AVSs served.
    pub fn avs(&self) -> Vec<Arc<Avs>> {
        self.avs_map().values().cloned().collect()
    }

    fn avs_map(&self) -> Arc<HashMap<Address, Arc<Avs>>> {
        self.avs
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// A reload: tasks from now on are checked and run against `avs` (each taking over the
    /// running state of the AVS it replaces, [`Avs::succeed`]); tasks already admitted finish
    /// under the configuration they started with.
    pub fn replace_avs(&self, avs: Vec<Avs>) {
        let mut map = self.avs.write().unwrap_or_else(PoisonError::into_inner);
        let next = avs
            .into_iter()
            .map(|mut a| {
                if let Some(old) = map.get(&a.address) {
                    a.succeed(old);
                }
                (a.address, Arc::new(a))
            })
            .collect();
        *map = Arc::new(next);
    }

    /// The metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The `avs` label for a request: a configured AVS's address, else `unknown` (an attacker
    /// cannot grow the label set). Compared as text (an address is `0x` and hex digits in either
    /// case), so the address is parsed once per task, by `validate::shape`.
    fn avs_label(&self, avs_address: &str) -> String {
        self.avs_map()
            .values()
            .find(|a| a.label.eq_ignore_ascii_case(avs_address))
            .map_or_else(|| UNKNOWN_AVS.to_owned(), |a| a.label.clone())
    }

    fn completed(&self, avs: &Avs, outcome: &str) {
        self.metrics
            .tasks_completed
            .with_label_values(&[avs.label.as_str(), outcome])
            .inc();
    }

    /// The operator address.
    pub fn operator(&self) -> Address {
        self.operator
    }

    /// Shutdown, first step: new tasks are refused (UNAVAILABLE), tasks already in the node carry
    /// on.
    pub fn drain(&self) {
        self.stopping.send_if_modified(|s| {
            let changed = *s == Stopping::Running;
            *s = (*s).max(Stopping::Draining);
            changed
        });
    }

    /// Shutdown, last step: every caller still waiting is answered UNAVAILABLE now. Work already
    /// running is not interrupted (a signature is committed or not at all); its answer is gone.
    pub fn cancel(&self) {
        self.stopping.send_replace(Stopping::Cancelled);
    }

    /// Callers waiting for an answer (for graceful shutdown).
    pub fn waiting_callers(&self) -> usize {
        self.tasks_in_memory.load(Ordering::Acquire)
    }

    /// Flights still running (for graceful shutdown).
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    /// The ledger.
    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    /// Processes one submission to its answer. `grpc_timeout` is the caller's gRPC deadline
    /// (version-1 tasks use it), or why its header is malformed; `peer` the address it came from
    /// (rate limits are per source).
    pub async fn submit(
        self: &Arc<Self>,
        sub: TaskSubmission,
        grpc_timeout: Result<Option<Duration>, Rejection>,
        intake: &'static str,
        peer: &Peer,
    ) -> Outcome {
        let label = self.avs_label(&sub.avs_address);
        self.metrics
            .tasks_received
            .with_label_values(&[label.as_str(), intake])
            .inc();
        let _total = self.metrics.stage_timer(&label, "total");
        let held = self.tasks_in_memory.fetch_add(1, Ordering::AcqRel);
        let _held = TaskCount(&self.tasks_in_memory);
        let mut stopping = self.stopping.subscribe();
        let outcome = if *stopping.borrow() != Stopping::Running {
            Err(Rejection::ShuttingDown)
        } else if held >= self.max_tasks_in_memory {
            let rejection = Rejection::Overloaded(self.max_tasks_in_memory);
            self.log_rejection(&rejection);
            Err(rejection)
        } else {
            tokio::select! {
                outcome = self.admitted(sub, grpc_timeout, peer) => outcome,
                _ = stopping.wait_for(|s| *s == Stopping::Cancelled) => Err(Rejection::ShuttingDown),
            }
        };
        // Answers are counted where they are made (signed, cached); refusals here, once each.
        if let Err(rejection) = &outcome {
            let m = &self.metrics;
            m.task_rejections
                .with_label_values(&[label.as_str(), rejection.reason()])
                .inc();
            let kind = if rejection.is_failure() {
                "failed"
            } else {
                "rejected"
            };
            m.tasks_completed
                .with_label_values(&[label.as_str(), kind])
                .inc();
            if matches!(rejection, Rejection::Conflict { .. }) {
                m.ledger_conflicts
                    .with_label_values(&[label.as_str()])
                    .inc();
            }
        }
        outcome
    }

    async fn admitted(
        self: &Arc<Self>,
        sub: TaskSubmission,
        grpc_timeout: Result<Option<Duration>, Rejection>,
        peer: &Peer,
    ) -> Outcome {
        match grpc_timeout.and_then(|timeout| Ok((validate::shape(sub)?, timeout))) {
            Ok((task, grpc_timeout)) => {
                let span = info_span!("task", task_id = %task.task_id, avs = %task.avs, operator_set = task.operator_set_id);
                let pipeline = self.clone();
                let outcome = async move {
                    let checked = pipeline.check(&task, grpc_timeout, peer).await?;
                    pipeline.admit(task, checked).await
                }
                .instrument(span.clone())
                .await;
                if let Err(rejection) = &outcome {
                    span.in_scope(|| self.log_rejection(rejection));
                }
                outcome
            }
            Err(rejection) => {
                self.log_rejection(&rejection);
                Err(rejection)
            }
        }
    }
}

/// Decrements a gauge when dropped (the task left the performer, however it ended).
struct GaugeGuard(avsnode_metrics::IntGauge);

impl GaugeGuard {
    fn inc(gauge: avsnode_metrics::IntGauge) -> GaugeGuard {
        gauge.inc();
        GaugeGuard(gauge)
    }
}

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Where a shutdown is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Stopping {
    Running,
    Draining,
    Cancelled,
}

/// One task held by the pipeline, counted against `max_tasks_in_memory` until dropped.
struct TaskCount<'a>(&'a AtomicUsize);

impl Drop for TaskCount<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// An internal failure, with its whole `source()` chain (the detail is often in the sources).
fn internal(e: impl Into<Box<dyn std::error::Error>>) -> Rejection {
    let e = e.into();
    let mut message = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        message = format!("{message}: {cause}");
        source = cause.source();
    }
    Rejection::Internal(message)
}

/// Warnings about rejected tasks are capped at this many a second; the rest are counted and the
/// count logged with the next warning let through. A flood of forged tasks is in the metrics
/// (`avsnode_task_rejections_total`) in full; in the log it is a few lines a second, not thousands.
const REJECTION_WARNINGS_PER_SECOND: u32 = 10;

impl Pipeline {
    /// Each rejection is logged once, at a level that fits its cause; warnings within
    /// [`REJECTION_WARNINGS_PER_SECOND`].
    fn log_rejection(&self, rejection: &Rejection) {
        match rejection {
            Rejection::BadSignature
            | Rejection::UnknownAggregator(_)
            | Rejection::WrongExecutor { .. } => self.warnings.warn(|| {
                warn!(reason = rejection.reason(), "rejected: {rejection}");
            }),
            // The ledger itself logs a conflict loudly, with its domain.
            Rejection::Internal(_) => error!(reason = rejection.reason(), "{rejection}"),
            _ => debug!(reason = rejection.reason(), "rejected: {rejection}"),
        }
    }
}
