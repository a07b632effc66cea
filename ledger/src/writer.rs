//! The writer thread: owns every `commit_signed` write transaction and commits them in groups.
//!
//! It blocks for the first queued request, waits the commit delay for more, takes whatever is
//! queued (up to [`MAX_BATCH`]), applies the batch in queue order inside one write transaction
//! (so a later request sees an earlier one's insert), commits durably once, and only then
//! replies. If anything fails at the storage level, the transaction is aborted and every request
//! of the batch gets the error: no record, and so no signature, ever leaves this thread unless
//! it is durably committed.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use redb::{Database, ReadableTable, Table, WriteTransaction};
use tokio::sync::{mpsc, oneshot};

use super::codec::{decode_value, encode_key, encode_value};
use super::{LedgerError, LedgerStats, Proposal, RECORDS, Record, RecordKey, Refusal, Signatures};

/// The most requests one transaction takes.
pub(super) const MAX_BATCH: usize = 1024;

/// How many requests may wait for the writer before `commit_signed` callers wait to enqueue.
pub(super) const QUEUE_CAPACITY: usize = 4 * MAX_BATCH;

/// One unit of work for the writer.
// `Commit` is the large variant and the one per task; boxing it would cost an allocation each.
#[allow(clippy::large_enum_variant)]
pub(super) enum Request {
    /// DESIGN §5's check-and-commit for signatures already made over `proposal.digest`.
    Commit {
        key: RecordKey,
        proposal: Proposal,
        signatures: Signatures,
        reply: oneshot::Sender<Result<Record, LedgerError>>,
    },
    /// Answered once everything queued before it has been committed (or has failed).
    Flush { reply: oneshot::Sender<()> },
}

/// Counters behind [`LedgerStats`].
#[derive(Debug, Default)]
pub(super) struct Counters {
    commits: AtomicU64,
    failed_commits: AtomicU64,
    requests: AtomicU64,
    commit_nanos: AtomicU64,
    max_batch: AtomicU64,
    conflicts: AtomicU64,
    /// Each durable commit's duration, for the metrics endpoint.
    pub(super) commit_seconds: Option<avsnode_metrics::PromHistogram>,
}

impl Counters {
    pub(super) fn with_commit_histogram(
        commit_seconds: Option<avsnode_metrics::PromHistogram>,
    ) -> Self {
        Counters {
            commit_seconds,
            ..Counters::default()
        }
    }

    pub(super) fn snapshot(&self) -> LedgerStats {
        LedgerStats {
            commits: self.commits.load(Ordering::Relaxed),
            failed_commits: self.failed_commits.load(Ordering::Relaxed),
            requests: self.requests.load(Ordering::Relaxed),
            commit_seconds_total: Duration::from_nanos(self.commit_nanos.load(Ordering::Relaxed))
                .as_secs_f64(),
            max_batch: self.max_batch.load(Ordering::Relaxed),
            conflicts: self.conflicts.load(Ordering::Relaxed),
        }
    }

    pub(super) fn conflict(&self) {
        self.conflicts.fetch_add(1, Ordering::Relaxed);
    }

    fn committed(&self, requests: usize, took: Duration) {
        if let Some(histogram) = &self.commit_seconds {
            histogram.observe(took.as_secs_f64());
        }
        let requests = u64::try_from(requests).unwrap_or(u64::MAX);
        let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        self.commits.fetch_add(1, Ordering::Relaxed);
        self.requests.fetch_add(requests, Ordering::Relaxed);
        self.commit_nanos.fetch_add(nanos, Ordering::Relaxed);
        self.max_batch.fetch_max(requests, Ordering::Relaxed);
    }
}

/// The writer thread's body; returns when every sender is gone and the queue is drained.
pub(super) fn run(
    db: Arc<Database>,
    mut queue: mpsc::Receiver<Request>,
    counters: Arc<Counters>,
    commit_delay: Duration,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while queue.blocking_recv_many(&mut batch, MAX_BATCH) > 0 {
        // Group commit under moderate load: let more writes join this batch's fsync.
        if !commit_delay.is_zero()
            && batch.len() < MAX_BATCH
            && batch.iter().any(|r| matches!(r, Request::Commit { .. }))
        {
            std::thread::sleep(commit_delay);
            while batch.len() < MAX_BATCH {
                match queue.try_recv() {
                    Ok(request) => batch.push(request),
                    Err(_) => break,
                }
            }
        }
        apply(&db, &mut batch, &counters);
        debug_assert!(batch.is_empty());
    }
    tracing::debug!("ledger writer stopped: queue closed and drained");
}

/// A request taken from the queue, waiting for the commit before its answer is sent.
#[allow(clippy::large_enum_variant)] // as for `Request`
enum Pending {
    Commit {
        reply: oneshot::Sender<Result<Record, LedgerError>>,
        outcome: Option<Result<Record, LedgerError>>,
    },
    Flush {
        reply: oneshot::Sender<()>,
    },
}

/// A storage failure that sinks the whole batch.
struct Failure {
    op: &'static str,
    source: Arc<redb::Error>,
}

impl Failure {
    fn new(op: &'static str, source: impl Into<redb::Error>) -> Self {
        Failure {
            op,
            source: Arc::new(source.into()),
        }
    }

    fn error(&self) -> LedgerError {
        LedgerError::Storage {
            op: self.op,
            source: Arc::clone(&self.source),
        }
    }
}

/// Applies one batch in one durable transaction. Every commit is durable, so a flush only has to
/// wait for the batches before it, which the queue order already guarantees.
fn apply(db: &Database, batch: &mut Vec<Request>, counters: &Counters) {
    let writes = batch
        .iter()
        .filter(|r| matches!(r, Request::Commit { .. }))
        .count();
    if writes == 0 {
        for request in batch.drain(..) {
            if let Request::Flush { reply } = request {
                // The flusher may have stopped waiting; nothing to do then.
                let _ = reply.send(());
            }
        }
        return;
    }

    let started = Instant::now();
    let now = now_unix_ms();
    let (pending, failure) = match db.begin_write() {
        Err(e) => {
            let pending = batch.drain(..).map(unanswered).collect();
            (
                pending,
                Some(Failure::new("starting a write transaction", e)),
            )
        }
        Ok(mut txn) => {
            // Two-phase commit: the commit slot is known good after a crash without trusting a
            // checksum over attacker-influenced data (outputs come from performers). It costs a
            // second fsync per batch, which group commit amortises.
            txn.set_two_phase_commit(true);
            let (pending, mut failure) = process(&txn, batch.drain(..), now);
            match failure {
                None => {
                    if let Err(e) = txn.commit() {
                        failure = Some(Failure::new("committing a batch", e));
                    }
                }
                Some(_) => {
                    if let Err(e) = txn.abort() {
                        tracing::warn!(error = %e, "aborting a failed ledger batch failed");
                    }
                }
            }
            (pending, failure)
        }
    };

    match &failure {
        // The counters describe durable commits: what an fsync costs per task.
        None => counters.committed(writes, started.elapsed()),
        Some(f) => {
            counters.failed_commits.fetch_add(1, Ordering::Relaxed);
            tracing::error!(
                op = f.op,
                error = %f.source,
                requests = writes,
                "ledger batch failed; nothing in it was committed and none of its signatures \
                 will be released"
            );
        }
    }
    tracing::trace!(
        requests = writes,
        micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
        "ledger batch done"
    );

    // Replies go out only now, after the durable commit: a record (and the signatures in it)
    // that is not committed never reaches a caller.
    for p in pending {
        // A caller that stopped waiting (its future was dropped) finds the committed record on
        // its next retry, so a failed send is not an error.
        match p {
            Pending::Commit { reply, outcome } => {
                let _ = reply.send(finish(outcome, &failure));
            }
            Pending::Flush { reply } => {
                let _ = reply.send(());
            }
        }
    }
}

fn finish(
    outcome: Option<Result<Record, LedgerError>>,
    failure: &Option<Failure>,
) -> Result<Record, LedgerError> {
    match (failure, outcome) {
        (None, Some(outcome)) => outcome,
        (Some(f), _) => Err(f.error()),
        // Unreachable: without a failure every request has an outcome. Fail closed anyway.
        (None, None) => Err(LedgerError::Closed),
    }
}

/// A request that gets no individual outcome (its batch failed). Its signatures are dropped here.
fn unanswered(request: Request) -> Pending {
    match request {
        Request::Commit { reply, .. } => Pending::Commit {
            reply,
            outcome: None,
        },
        Request::Flush { reply } => Pending::Flush { reply },
    }
}

/// Applies the requests in order. After the first storage failure the rest are only collected.
fn process(
    txn: &WriteTransaction,
    requests: impl Iterator<Item = Request>,
    now: u64,
) -> (Vec<Pending>, Option<Failure>) {
    let mut out = Vec::new();
    let mut table = match txn.open_table(RECORDS) {
        Ok(table) => table,
        Err(e) => {
            let out = requests.map(unanswered).collect();
            return (out, Some(Failure::new("opening the records table", e)));
        }
    };
    let mut failure = None;
    for request in requests {
        if failure.is_some() {
            out.push(unanswered(request));
            continue;
        }
        match request {
            Request::Commit {
                key,
                proposal,
                signatures,
                reply,
            } => match commit_signed(&mut table, key, proposal, signatures, now) {
                Ok(outcome) => out.push(Pending::Commit {
                    reply,
                    outcome: Some(outcome),
                }),
                Err(f) => {
                    failure = Some(f);
                    out.push(Pending::Commit {
                        reply,
                        outcome: None,
                    });
                }
            },
            Request::Flush { reply } => out.push(Pending::Flush { reply }),
        }
    }
    (out, failure)
}

type Records<'txn> = Table<'txn, &'static [u8], &'static [u8]>;

/// Reads the stored record for `key`, if any.
fn get(
    table: &Records<'_>,
    key: &RecordKey,
) -> Result<Option<Result<Record, LedgerError>>, Failure> {
    let encoded = encode_key(key);
    let guard = table
        .get(encoded.as_slice())
        .map_err(|e| Failure::new("reading a record", e))?;
    Ok(guard.map(|value| {
        decode_value(*key, value.value()).map_err(|source| LedgerError::Corrupt {
            task_id: Some(key.task_id),
            source,
        })
    }))
}

fn put(table: &mut Records<'_>, record: &Record) -> Result<Result<(), LedgerError>, Failure> {
    let Some(value) = encode_value(record) else {
        return Ok(Err(LedgerError::InvalidProposal {
            task_id: record.key.task_id,
            problem: "a byte field is longer than the ledger layout allows (4 GiB)",
        }));
    };
    table
        .insert(encode_key(&record.key).as_slice(), value.as_slice())
        .map_err(|e| Failure::new("writing a record", e))?;
    Ok(Ok(()))
}

/// DESIGN §5's procedure for one request: the outer `Result` is a batch failure, the inner one
/// this request's answer. Whatever happens, the record returned is the one this transaction
/// leaves stored, so its signatures are the only ones that may be released.
fn commit_signed(
    table: &mut Records<'_>,
    key: RecordKey,
    proposal: Proposal,
    signatures: Signatures,
    now: u64,
) -> Result<Result<Record, LedgerError>, Failure> {
    let digest = *proposal.digest.as_bytes();
    let record = match get(table, &key)? {
        None => Record {
            key,
            origin: proposal.origin,
            reference_timestamp: proposal.reference_timestamp,
            message_hash: proposal.message_hash,
            digest,
            output: proposal.output,
            signatures: Some(signatures),
            created_at_unix_ms: now,
        },
        // Fail closed: neither sign off nor overwrite what cannot be read.
        Some(Err(corrupt)) => return Ok(Err(corrupt)),
        Some(Ok(stored)) => {
            // Another origin or digest: ours are dropped with `signatures`, never stored or
            // returned.
            if let Err(refusal) =
                stored.permits(proposal.origin, proposal.reference_timestamp, &digest)
            {
                return Ok(Err(conflict(&key, refusal)));
            }
            if stored.signatures.is_some() {
                // Already signed over this digest (an earlier call, perhaps earlier in this
                // batch): the stored bytes win, so every answer for this task is identical even
                // from a randomised signer (HSM). Ours are discarded.
                return Ok(Ok(stored));
            }
            // Committed over this digest but never signed (a crash of an avsnode that committed
            // before signing, or an import): ours are over the same digest, so they complete it.
            Record {
                signatures: Some(signatures),
                ..stored
            }
        }
    };
    Ok(put(table, &record)?.map(|()| record))
}

/// Logs a refusal loudly and makes its error.
pub(super) fn conflict(key: &RecordKey, refusal: Refusal) -> LedgerError {
    tracing::error!(
        task_id = %key.task_id,
        key_id = %format_args!("0x{}", hex::encode(key.key_id)),
        domain = ?key.domain.map(hex::encode),
        "LEDGER CONFLICT: refusing to sign task {}: already {refusal}", key.task_id
    );
    LedgerError::Conflict {
        key: Box::new(*key),
        refusal,
    }
}

/// Milliseconds since the Unix epoch (0 if the clock is before 1970).
pub(super) fn now_unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
