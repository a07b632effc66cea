//! The task pipeline (DESIGN §3.1): validation, the ledger fast path, admission with single
//! flight, execution, output checks, and sign-and-commit (sign, durably record with the
//! signatures, answer from the committed record).
//!
//! The work after admission runs in a spawned task (a "flight") whose outcome every caller for
//! that task awaits: a retry arriving while the first attempt runs joins it instead of executing
//! again, and a caller that disconnects does not stop sign-and-commit half way (§3.2).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use avsnode_metrics::{Metrics, UNKNOWN_AVS};
use avsnode_performer::{ExecuteError, PerformerSlot};
use avsnode_proto::executor::{TaskResult, TaskSubmission};
use avsnode_proto::performer::TaskRequest;
use avsnode_signer::VerifyingKey;
use avsnode_signer::messages::{Address, EcdsaVerifier, ResultCertificate, TaskId};
use rustls_pki_types::DnsName;
use tokio::sync::{Semaphore, watch};
use tokio::time::Instant;
use tracing::{Instrument, debug, error, info_span, warn};

use crate::config::AvsConfig;
use crate::limits::RateLimiter;
use crate::rejection::Rejection;
use crate::tls::ClientCertificate;
use crate::validate::{self, Task};
use crate::warnings::WarningBudget;
use avsnode_ledger::{
    Claim, Ledger, LedgerError, Origin, Record, RecordKey, Refusal, SignOnceError, Signatures,
    Signed,
};
use avsnode_signing::remote::SignFields;
use avsnode_signing::{SignError, SigningMethod};

/// Time kept back from the performer call for signing and for the answer to reach the caller
/// before its own deadline: a tenth of the time left, between 20 and 250 ms. (A fixed 20 ms was
/// too thin on a loaded machine: the caller's timer fired before the node's answer arrived.)
fn signing_margin(left: Duration) -> Duration {
    (left / 10).clamp(Duration::from_millis(20), Duration::from_millis(250))
}

/// The outcome every caller of one flight receives.
pub type Outcome = Result<TaskResult, Rejection>;

/// One operator set this node signs for.
#[derive(Debug)]
pub struct OperatorSet {
    /// Its id.
    pub id: u32,
    /// The key that signs its results.
    pub key: Arc<SigningMethod>,
    /// What its results are signed under (the scheme's digest, the ECDSA verifier's domain).
    pub certificate: ResultCertificate,
    /// ECDSA sets: the certificate verifier, as a remote signer is told it.
    pub verifier: Option<EcdsaVerifier>,
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
            .iter()
            .filter_map(|a| {
                let names = a
                    .tls_client_names
                    .iter()
                    .filter_map(|n| Some(DnsName::try_from(n.as_str()).ok()?.to_owned()))
                    .collect();
                Some((a.address.parse().ok()?, names))
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
    flights: Mutex<HashMap<FlightKey, watch::Receiver<Option<Outcome>>>>,
    in_flight: AtomicUsize,
    /// Shutdown: new tasks refused once draining; callers still waiting answered UNAVAILABLE once
    /// cancelled.
    stopping: watch::Sender<Stopping>,
    tasks_in_memory: AtomicUsize,
    max_tasks_in_memory: usize,
    /// Aggregator-signature checks running at once: one per core. Unbounded, a flood of forged
    /// tasks (each passing the cheap checks) ran one blocking thread each and starved honest work.
    verifying: Semaphore,
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
        metrics: Arc<Metrics>,
        max_tasks_in_memory: usize,
    ) -> Arc<Pipeline> {
        let avs = avs.into_iter().map(|a| (a.address, Arc::new(a))).collect();
        Arc::new(Pipeline {
            operator,
            avs: RwLock::new(Arc::new(avs)),
            ledger,
            flights: Mutex::default(),
            in_flight: AtomicUsize::new(0),
            stopping: watch::Sender::new(Stopping::Running),
            tasks_in_memory: AtomicUsize::new(0),
            max_tasks_in_memory,
            verifying: Semaphore::new(
                std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get),
            ),
            warnings: WarningBudget::new("rejection", REJECTION_WARNINGS_PER_SECOND),
            metrics,
        })
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
    /// cannot grow the label set).
    fn avs_label(&self, avs_address: &str) -> String {
        avs_address
            .parse::<Address>()
            .ok()
            .and_then(|a| self.avs_map().get(&a).map(|a| a.label.clone()))
            .unwrap_or_else(|| UNKNOWN_AVS.to_owned())
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
                let outcome = self
                    .clone()
                    .checked(task, grpc_timeout, peer)
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

    async fn checked(
        self: Arc<Self>,
        task: Task,
        grpc_timeout: Option<Duration>,
        peer: &Peer,
    ) -> Outcome {
        if task.executor != self.operator {
            return Err(Rejection::WrongExecutor {
                got: task.executor,
                ours: self.operator,
            });
        }
        let avs = self
            .avs_map()
            .get(&task.avs)
            .cloned()
            .ok_or(Rejection::UnknownAvs(task.avs))?;
        let validate_timer = self.metrics.stage_timer(&avs.label, "validate");
        if task.payload.len() > avs.config.max_payload_size {
            return Err(Rejection::PayloadTooLarge {
                size: task.payload.len(),
                limit: avs.config.max_payload_size,
            });
        }
        let set =
            avs.operator_sets
                .get(&task.operator_set_id)
                .ok_or(Rejection::UnknownOperatorSet {
                    avs: task.avs,
                    id: task.operator_set_id,
                })?;
        let deadline = Instant::from_std(validate::deadline(
            &task,
            grpc_timeout,
            &avs.config,
            std::time::Instant::now(),
        )?);
        validate::freshness(&task, &avs.config)?;
        let aggregator = avs
            .aggregators
            .get(&task.aggregator)
            .cloned()
            .ok_or(Rejection::UnknownAggregator(task.aggregator))?;
        // Mutual TLS: the aggregator named in the task must be the one holding the connection's
        // certificate (before rate limiting: an impostor does not spend its victim's budget).
        if let Some(names) = avs.client_names.get(&task.aggregator)
            && !names.is_empty()
            && !peer
                .certificate
                .as_ref()
                .is_some_and(|c| c.is_valid_for(names))
        {
            return Err(Rejection::ClientCertificate(task.aggregator));
        }
        // Before hashing the payload or checking the signature: a flood costs a lookup each.
        if !avs
            .rate_limiter
            .allow(task.aggregator, peer.ip, std::time::Instant::now())
        {
            return Err(Rejection::RateLimited(task.aggregator));
        }

        let h = validate::task_hash(&task, self.operator);
        let signature = task.signature.clone();
        let verified = {
            let _permit = self.verifying.acquire().await.map_err(internal)?;
            tokio::task::spawn_blocking(move || aggregator.verify(&h, &signature))
                .await
                .map_err(|e| Rejection::Internal(format!("signature check panicked: {e}")))?
        };
        if !verified {
            return Err(Rejection::BadSignature);
        }
        drop(validate_timer);

        let key = RecordKey::new(set.key.key_id(), &set.certificate, task.task_id);
        // Fast path: a retry of a signed task is answered from the ledger, without execution.
        if let Some(record) = self.ledger.lookup(&key).map_err(internal)?
            && record.signatures.is_some()
        {
            let outcome = self.answer_from_record(&task, set, &record);
            if outcome.is_ok() {
                self.completed(&avs, "cached");
            }
            return outcome;
        }
        self.join_flight(avs, task, key, h, deadline).await
    }

    /// Single flight: the first caller for a task starts its flight; later ones await it.
    async fn join_flight(
        self: Arc<Self>,
        avs: Arc<Avs>,
        task: Task,
        key: RecordKey,
        h: [u8; 32],
        deadline: Instant,
    ) -> Outcome {
        let flight_key = (task.avs, task.operator_set_id, task.task_id, h);
        let joined = Arc::clone(&avs);
        let (mut receiver, leader) = {
            let mut flights = self.flights.lock().unwrap_or_else(|e| e.into_inner());
            match flights.get(&flight_key) {
                Some(receiver) => (receiver.clone(), false),
                None => {
                    let queued = Queued::take(&avs)?;
                    let (sender, receiver) = watch::channel(None);
                    flights.insert(flight_key, receiver.clone());
                    let flight = Flight::start(self.clone(), flight_key);
                    let span = tracing::Span::current();
                    tokio::spawn(
                        async move {
                            let outcome = flight
                                .pipeline
                                .fly(&avs, &task, key, deadline, queued)
                                .await;
                            // The flight ends (its entry and count released) before its answer
                            // goes out; on a panic the guard releases them as it unwinds.
                            drop(flight);
                            let _ = sender.send(Some(outcome));
                        }
                        .instrument(span),
                    );
                    (receiver, true)
                }
            }
        };
        let outcome = receiver
            .wait_for(Option::is_some)
            .await
            .map_err(|_| Rejection::Internal("task flight ended without an outcome".into()))?;
        let outcome = outcome
            .clone()
            .unwrap_or_else(|| Err(Rejection::Internal("empty outcome".into())));
        // The leader's answer was counted by its flight; a joiner's is a shared one.
        if !leader && outcome.is_ok() {
            self.completed(&joined, "cached");
        }
        outcome
    }

    /// Steps 8–11 for the flight's leader: queue, execute, check, sign, commit to the ledger.
    async fn fly(
        &self,
        avs: &Avs,
        task: &Task,
        key: RecordKey,
        deadline: Instant,
        queued: Queued,
    ) -> Outcome {
        let m = &self.metrics;
        let queue_depth = GaugeGuard::inc(m.queue_depth.with_label_values(&[avs.label.as_str()]));
        let queue_timer = m.stage_timer(&avs.label, "queue");
        let permit = tokio::time::timeout_at(deadline, avs.slots.clone().acquire_owned()).await;
        drop((queued, queue_depth, queue_timer));
        let _permit = permit
            .map_err(|_| Rejection::Deadline("expired while queued for the performer".into()))?
            .map_err(|_| Rejection::ShuttingDown)?;
        let _inflight = GaugeGuard::inc(m.tasks_inflight.with_label_values(&[avs.label.as_str()]));

        // A record without signatures (left by an older avsnode that crashed between commit and
        // signing, or imported) is finished from its stored output: the performer is not asked
        // again. `sign_once` refuses it if this request's origin or digest differs.
        let set = &avs.operator_sets[&task.operator_set_id];
        let output = match self.ledger.lookup(&key).map_err(internal)? {
            Some(record) if record.signatures.is_some() => {
                let outcome = self.answer_from_record(task, set, &record);
                if outcome.is_ok() {
                    self.completed(avs, "cached");
                }
                return outcome;
            }
            Some(record) => record.output,
            None => {
                let _execute = m.stage_timer(&avs.label, "execute");
                self.execute(avs, task, deadline).await?
            }
        };

        let sign_timer = m.stage_timer(&avs.label, "sign");
        let signing_started = std::time::Instant::now();
        let scheme = set.key.scheme().as_str();
        let backend = set.key.backend();
        let claim = Claim {
            task_id: task.task_id,
            origin: origin(task),
            reference_timestamp: task.reference_timestamp,
            output: output.clone(),
        };
        let sign = |digest| async move {
            let fields = SignFields {
                task_id: task.task_id,
                avs: task.avs,
                operator_set_id: task.operator_set_id,
                reference_timestamp: task.reference_timestamp,
                output: &output,
                operator: self.operator,
                verifier: set.verifier.as_ref(),
            };
            let signed = tokio::time::timeout_at(deadline, set.key.sign_result(digest, fields))
                .await
                .unwrap_or_else(|_| {
                    Err(SignError::Unavailable(
                        "no answer before the task's deadline".into(),
                    ))
                })?;
            // Two signatures per task: the result's and the auth's.
            m.sign_seconds
                .with_label_values(&[scheme, backend])
                .observe(signing_started.elapsed().as_secs_f64());
            m.signatures
                .with_label_values(&[scheme, backend, "ok"])
                .inc_by(2);
            Ok(Signatures {
                result: signed.result,
                auth: signed.auth,
            })
        };
        // Our signatures move into the ledger and only the committed record comes back: the
        // answer is built from that record alone, never from what we signed. Its signatures are
        // durably committed, and are an earlier attempt's if one won for this digest; on a
        // refusal ours are dropped unreleased (DESIGN §5).
        let signed = self
            .ledger
            .sign_once(set.key.key_id(), &set.certificate, claim, sign)
            .await;
        let Signed { record, fresh } = match signed {
            Ok(signed) => signed,
            Err(SignOnceError::Ledger(LedgerError::Conflict { refusal, .. })) => {
                return Err(conflict(task, refusal));
            }
            Err(SignOnceError::Ledger(e)) => return Err(internal(e)),
            Err(SignOnceError::Sign(e)) => {
                m.signatures
                    .with_label_values(&[scheme, backend, "error"])
                    .inc();
                return Err(match e {
                    SignError::Unavailable(why) => Rejection::SignerUnavailable(why),
                    SignError::Refused(why) => Rejection::Conflict {
                        task_id: task.task_id,
                        why,
                    },
                    SignError::Failed(why) => Rejection::SignerFailed(why),
                });
            }
        };
        let signatures = record
            .signatures
            .as_ref()
            .ok_or_else(|| internal("committed record without signatures"))?;
        drop(sign_timer);
        self.completed(avs, if fresh { "signed" } else { "cached" });
        Ok(self.result(task, &record.output, signatures))
    }

    /// Step 9–10: the performer call with the remaining time, and the output checks.
    async fn execute(
        &self,
        avs: &Avs,
        task: &Task,
        deadline: Instant,
    ) -> Result<Vec<u8>, Rejection> {
        let wire_id = task.task_id.to_wire_string().into_bytes();
        let left = deadline.saturating_duration_since(Instant::now());
        let timeout = left.saturating_sub(signing_margin(left));
        if timeout.is_zero() {
            return Err(Rejection::Deadline("no time left to execute".into()));
        }
        let request = TaskRequest {
            task_id: wire_id.clone(),
            payload: task.payload.clone(),
        };
        // Held for the whole call: a deploy that swaps the slot meanwhile drains this one.
        let performer = avs
            .performer
            .current()
            .map_err(Rejection::PerformerUnavailable)?;
        let response = performer
            .execute(request, timeout)
            .await
            .map_err(|e| match e {
                ExecuteError::Unavailable(why) => Rejection::PerformerUnavailable(why),
                ExecuteError::DeadlineExceeded => Rejection::PerformerTimeout,
                ExecuteError::Status(status) => Rejection::PerformerError {
                    code: status.code(),
                    message: status.message().to_owned(),
                },
            })?;
        if Instant::now() >= deadline {
            return Err(Rejection::LateResult);
        }
        if response.result.len() > avs.config.max_output_size {
            return Err(Rejection::OutputTooLarge {
                size: response.result.len(),
                limit: avs.config.max_output_size,
            });
        }
        if response.task_id != wire_id {
            return Err(Rejection::WrongEcho);
        }
        Ok(response.result)
    }

    /// Answers from a signed record — only a request from the record's own AVS and operator set
    /// that asks for the very digest that was signed. Anything else (another origin sharing the
    /// key, another reference timestamp) is refused, never answered with signatures that do not
    /// match it, and never signed.
    fn answer_from_record(&self, task: &Task, set: &OperatorSet, record: &Record) -> Outcome {
        let signatures = record
            .signatures
            .as_ref()
            .ok_or_else(|| internal("answering from an unsigned record"))?;
        record
            .answers(&set.certificate, origin(task), task.reference_timestamp)
            .map_err(|refusal| {
                error!(
                    "ledger conflict: refusing task {}: already {refusal}",
                    task.task_id
                );
                conflict(task, refusal)
            })?;
        debug!("answered from the ledger");
        Ok(self.result(task, &record.output, signatures))
    }

    fn result(&self, task: &Task, output: &[u8], signatures: &Signatures) -> TaskResult {
        TaskResult {
            task_id: task.task_id_wire.clone(),
            operator_address: self.operator.to_string(),
            output: output.to_vec(),
            result_signature: signatures.result.clone(),
            avs_address: task.avs.to_string(),
            operator_set_id: task.operator_set_id,
            auth_signature: signatures.auth.clone(),
            version: 1,
        }
    }
}

/// A flight counted in [`Pipeline::in_flight`] and listed in its flights until dropped — at its
/// end, or while unwinding from a panic, so neither ever leaks.
struct Flight {
    pipeline: Arc<Pipeline>,
    key: FlightKey,
}

impl Flight {
    fn start(pipeline: Arc<Pipeline>, key: FlightKey) -> Flight {
        pipeline.in_flight.fetch_add(1, Ordering::AcqRel);
        Flight { pipeline, key }
    }
}

impl Drop for Flight {
    fn drop(&mut self) {
        self.pipeline
            .flights
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.key);
        self.pipeline.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// One of an AVS's `queue_depth` waiting places, held until the task gets a performer slot (or
/// its flight ends, however).
struct Queued(Arc<AtomicUsize>);

impl Queued {
    fn take(avs: &Avs) -> Result<Queued, Rejection> {
        if avs.waiting.fetch_add(1, Ordering::AcqRel) >= avs.config.queue_depth {
            avs.waiting.fetch_sub(1, Ordering::AcqRel);
            return Err(Rejection::QueueFull(avs.config.queue_depth));
        }
        Ok(Queued(avs.waiting.clone()))
    }
}

impl Drop for Queued {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
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

/// The answer to a task the ledger refuses: what was signed before, and not for this request.
fn conflict(task: &Task, refusal: Refusal) -> Rejection {
    Rejection::Conflict {
        task_id: task.task_id,
        why: format!("already {refusal}"),
    }
}

/// The AVS and operator set a task is for.
fn origin(task: &Task) -> Origin {
    Origin {
        avs: task.avs,
        operator_set_id: task.operator_set_id,
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
