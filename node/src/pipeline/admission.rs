//! Admission, DESIGN §3.1 steps 7–8: single flight (a retry arriving while the first attempt
//! runs joins it instead of executing again), the per-AVS queue for a performer slot, and the
//! ledger fast path, which is the flight's claim (a retry of a signed task is answered from its
//! record, without execution). The flight runs in a spawned task, so a caller that disconnects
//! does not stop sign-and-commit half way (§3.2).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, PoisonError};

use avsnode_ledger::{Claimed, Record, RecordKey};
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::Instrument;

use super::sign::origin;
use super::validate::{Checked, Task};
use super::{Avs, FlightKey, GaugeGuard, Outcome, Pipeline, internal};
use crate::pipeline::rejection::Rejection;

impl Pipeline {
    /// After validation: single flight. Its claim is the ledger fast path, on either ledger: a
    /// read of the embedded ledger before the flight as well cost every fresh task a second one.
    pub(super) async fn admit(self: Arc<Self>, task: Task, checked: Checked) -> Outcome {
        let Checked { avs, deadline, h } = checked;
        let set = &avs.operator_sets[&task.operator_set_id];
        let key = RecordKey::new(set.key_id, &set.certificate, task.task_id);
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
                    // Boxed: the flight's future is several KiB, copied on every move otherwise.
                    tokio::spawn(Box::pin(
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
                    ));
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

    /// Steps 8–11 for the flight's leader: claim the task in the ledger (answered from a record
    /// another attempt signed, or waiting while another replica runs it), queue for a performer
    /// slot, execute (or take the output an earlier attempt sealed), then sign and commit.
    async fn fly(
        &self,
        avs: &Avs,
        task: &Task,
        key: RecordKey,
        deadline: Instant,
        queued: Queued,
    ) -> Outcome {
        let m = &self.metrics;
        let claimed = self
            .ledger
            .claim(
                &key,
                origin(task),
                task.reference_timestamp,
                self.claim_lease,
                deadline,
            )
            .await
            .map_err(|e| self.ledger_rejection(avs, task, e))?;
        let (ticket, sealed) = match claimed {
            Claimed::Signed(record) => return self.cached(avs, task, &record),
            Claimed::Run(ticket) => (ticket, None),
            // Signed again from its sealed output: the performer is not asked again.
            Claimed::Sealed(ticket, record) => (ticket, Some(record.output)),
            Claimed::Busy => return Err(internal("the ledger answered busy")),
        };

        let queue_depth = GaugeGuard::inc(m.queue_depth.with_label_values(&[avs.label.as_str()]));
        let queue_timer = m.stage_timer(&avs.label, "queue");
        let permit = tokio::time::timeout_at(deadline, avs.slots.clone().acquire_owned()).await;
        drop((queued, queue_depth, queue_timer));
        let permit = match permit {
            Ok(Ok(permit)) => permit,
            Ok(Err(_)) => {
                self.ledger.release(ticket).await;
                return Err(Rejection::ShuttingDown);
            }
            Err(_) => {
                self.ledger.release(ticket).await;
                return Err(Rejection::Deadline(
                    "expired while queued for the performer".into(),
                ));
            }
        };
        let _inflight = GaugeGuard::inc(m.tasks_inflight.with_label_values(&[avs.label.as_str()]));

        let set = &avs.operator_sets[&task.operator_set_id];
        let output = match sealed {
            Some(output) => output,
            None => {
                let _execute = m.stage_timer(&avs.label, "execute");
                match self.execute(avs, task, deadline).await {
                    Ok(output) => output,
                    Err(rejection) => {
                        self.ledger.release(ticket).await;
                        return Err(rejection);
                    }
                }
            }
        };
        // The slot counts tasks in the performer (`max_concurrency`): signing and the ledger's
        // commit do not hold it. Held through them, it capped a node at max_concurrency tasks per
        // commit delay, with cores idle.
        drop(permit);
        self.sign_and_commit(avs, set, task, ticket, output, deadline)
            .await
    }

    /// The answer to `task` from its signed `record`, counted as a `cached` completion.
    fn cached(&self, avs: &Avs, task: &Task, record: &Record) -> Outcome {
        let set = &avs.operator_sets[&task.operator_set_id];
        let outcome = self.answer_from_record(task, set, record);
        if outcome.is_ok() {
            self.completed(avs, "cached");
        }
        outcome
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
