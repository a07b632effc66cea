//! Aggregators' signatures, checked in batches while tasks wait (DESIGN §3.1 step 7).
//!
//! At most one check runs per core. ECDSA signatures, which have no batch shortcut, are checked
//! one by one on the task's own thread (a recovery costs less than a hand-off to a blocking
//! thread). For BN254 and BLS12-381, a task whose check cannot start at once waits in its key's
//! queue; whichever task gets the next core takes up to [`MAX_BATCH`] waiting signatures of its
//! key and checks them together ([`VerifyingKey::verify_batch`]: one random linear combination
//! for BN254 and BLS12-381, split until each bad signature stands alone). A lone task on an idle
//! node is checked at once, alone: batching adds no latency, it only forms from tasks that
//! would wait anyway.
//!
//! Every task pushes its signature before it waits for a core, and every task that gets a core
//! takes at least one waiting signature if any is left, so each signature is taken by the time
//! the last waiter has had its turn (tokio's semaphore is fair). Signatures of tasks that gave up
//! waiting are dropped unchecked. The verdicts are sent from the blocking thread itself: a task
//! that gives up while its batch is being checked costs the others nothing.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};

use avsnode_metrics::Metrics;
use avsnode_signer::VerifyingKey;
use tokio::sync::{Semaphore, oneshot};

use super::internal;
use crate::pipeline::rejection::Rejection;

/// The most signatures checked together: a BN254 batch of 64 takes a few milliseconds of one
/// core, against about 64 pairings one by one.
pub const MAX_BATCH: usize = 64;

/// One signature waiting for its check.
#[derive(Debug)]
struct Waiting {
    h: [u8; 32],
    signature: Vec<u8>,
    verdict: oneshot::Sender<bool>,
}

/// The aggregator-signature checks of a pipeline.
#[derive(Debug)]
pub(super) struct SignatureChecks {
    /// One per core: checks running at once. Unbounded, a flood of forged tasks (each passing
    /// the cheap checks) ran one blocking thread each and starved honest work.
    cores: Arc<Semaphore>,
    /// Waiting signatures by key (few keys: the aggregators of the node's AVSs).
    waiting: Mutex<Vec<(VerifyingKey, VecDeque<Waiting>)>>,
    metrics: Arc<Metrics>,
}

impl SignatureChecks {
    /// Checks on at most `cores` cores at once.
    pub(super) fn new(cores: usize, metrics: Arc<Metrics>) -> SignatureChecks {
        SignatureChecks {
            cores: Arc::new(Semaphore::new(cores.max(1))),
            waiting: Mutex::default(),
            metrics,
        }
    }

    /// Whether `signature` over `h` verifies under `key`.
    pub(super) async fn verify(
        &self,
        key: &VerifyingKey,
        h: [u8; 32],
        signature: &[u8],
    ) -> Result<bool, Rejection> {
        if let VerifyingKey::Ecdsa(_) = key {
            // ECDSA has no batch shortcut, and one recovery (about 40 µs) costs less than handing
            // it to a blocking thread and back: checked here, still one per core at a time.
            let _core = self.cores.acquire().await.map_err(internal)?;
            self.observe(key, 1);
            return Ok(key.verify(&h, signature));
        }
        let (sender, verdict) = oneshot::channel();
        self.push(
            key,
            Waiting {
                h,
                signature: signature.to_vec(),
                verdict: sender,
            },
        );
        let core = self.cores.clone().acquire_owned().await.map_err(internal)?;
        let batch = self.take(key);
        if !batch.is_empty() {
            self.observe(key, batch.len());
            let key = key.clone();
            // Detached: the verdicts go out even if this task is cancelled meanwhile.
            drop(tokio::task::spawn_blocking(move || {
                let items: Vec<([u8; 32], &[u8])> =
                    batch.iter().map(|w| (w.h, &w.signature[..])).collect();
                let verdicts = key.verify_batch(&items);
                drop(core);
                for (waiting, ok) in batch.into_iter().zip(verdicts) {
                    // A task that gave up no longer listens.
                    let _ = waiting.verdict.send(ok);
                }
            }));
        }
        verdict
            .await
            .map_err(|_| Rejection::Internal("the signature check panicked".into()))
    }

    fn observe(&self, key: &VerifyingKey, batch: usize) {
        self.metrics
            .signature_batch_size
            .with_label_values(&[key.scheme().as_str()])
            .observe(batch as f64);
    }

    fn push(&self, key: &VerifyingKey, waiting: Waiting) {
        let mut queues = self.waiting.lock().unwrap_or_else(PoisonError::into_inner);
        match queues.iter_mut().find(|(k, _)| k == key) {
            Some((_, queue)) => queue.push_back(waiting),
            None => queues.push((key.clone(), VecDeque::from([waiting]))),
        }
    }

    /// Up to [`MAX_BATCH`] signatures still awaited, first come first; drops those of tasks
    /// that gave up, and the key's queue once empty.
    fn take(&self, key: &VerifyingKey) -> Vec<Waiting> {
        let mut queues = self.waiting.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(at) = queues.iter().position(|(k, _)| k == key) else {
            return Vec::new();
        };
        let queue = &mut queues[at].1;
        let mut batch = Vec::with_capacity(queue.len().min(MAX_BATCH));
        while batch.len() < MAX_BATCH {
            match queue.pop_front() {
                Some(w) if w.verdict.is_closed() => {}
                Some(w) => batch.push(w),
                None => break,
            }
        }
        if queue.is_empty() {
            queues.swap_remove(at);
        }
        batch
    }
}
