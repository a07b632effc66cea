//! Validation, DESIGN §3.1 steps 1–7 and their order: the shape of a submission ([`shape`]), then
//! [`Pipeline::check`] — addressee, AVS, payload size, operator set, deadline, freshness,
//! aggregator, its certificate, its rate limit, its signature, and with `[chain]` this
//! operator's standing in the set at the task's block. Nothing here calls a performer or the
//! ledger; a task that passes is [`Checked`].

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use avsnode_proto::executor::TaskSubmission;
use avsnode_proto::{HOURGLASS_TASK_VERSION, SIGNED_DEADLINE_TASK_VERSION};
use avsnode_signer::messages::{Address, TaskId, TaskMessage};

use super::{Avs, Peer, Pipeline, internal};
use crate::config::{Aggregators, AvsConfig};
use crate::pipeline::rejection::Rejection;

/// A task whose fields parsed (step 1).
#[derive(Debug, Clone)]
pub struct Task {
    /// The task id, normalised.
    pub task_id: TaskId,
    /// The task id string exactly as received (echoed in the result).
    pub task_id_wire: String,
    /// The aggregator that sent it.
    pub aggregator: Address,
    /// The AVS.
    pub avs: Address,
    /// The executor the task is addressed to.
    pub executor: Address,
    /// The operator set.
    pub operator_set_id: u32,
    /// The reference timestamp (unix seconds).
    pub reference_timestamp: u32,
    /// The block number.
    pub task_block_number: u64,
    /// 1 (Hourglass) or 1001 (avsnode's signed deadline).
    pub version: u32,
    /// Version 1001: the signed deadline.
    pub deadline_unix_ms: Option<u64>,
    /// The payload.
    pub payload: Vec<u8>,
    /// The aggregator's signature.
    pub signature: Vec<u8>,
}

/// The most time a task may have: a signed deadline further ahead is malformed, and a longer gRPC
/// timeout is cut to it. (Deadlines this far out only hold slots; none is needed.)
pub const MAX_TASK_TIME: Duration = Duration::from_secs(24 * 3600);

/// Step 1: every field parses; version is 1 or 1001; non-empty signature; non-zero timestamp.
pub fn shape(sub: TaskSubmission) -> Result<Task, Rejection> {
    let field = |name: &str, value: &str| -> Result<Address, Rejection> {
        value
            .parse()
            .map_err(|e| Rejection::Malformed(format!("{name}: {e}")))
    };
    let task_id = sub
        .task_id
        .parse()
        .map_err(|e| Rejection::Malformed(format!("task_id: {e}")))?;
    let aggregator = field("aggregator_address", &sub.aggregator_address)?;
    let avs = field("avs_address", &sub.avs_address)?;
    let executor = field("executor_address", &sub.executor_address)?;
    if sub.signature.is_empty() {
        return Err(Rejection::Malformed("signature is empty".into()));
    }
    if sub.reference_timestamp == 0 {
        return Err(Rejection::Malformed("reference_timestamp is 0".into()));
    }
    let deadline_unix_ms = match sub.version {
        HOURGLASS_TASK_VERSION => None,
        SIGNED_DEADLINE_TASK_VERSION if sub.deadline_unix_ms == 0 => {
            return Err(Rejection::Malformed(format!(
                "version {SIGNED_DEADLINE_TASK_VERSION} task without deadline_unix_ms"
            )));
        }
        SIGNED_DEADLINE_TASK_VERSION => Some(sub.deadline_unix_ms),
        v => return Err(Rejection::UnsupportedVersion(v)),
    };
    Ok(Task {
        task_id,
        task_id_wire: sub.task_id,
        aggregator,
        avs,
        executor,
        operator_set_id: sub.operator_set_id,
        reference_timestamp: sub.reference_timestamp,
        task_block_number: sub.task_block_number,
        version: sub.version,
        deadline_unix_ms,
        payload: sub.payload,
        signature: sub.signature,
    })
}

/// Unix time in milliseconds.
pub fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// A `grpc-timeout` header value as gRPC over HTTP/2 defines it: 1 to 8 ASCII digits and a unit
/// (`H`, `M`, `S`, `m`, `u`, `n`). Anything else is malformed, never a panic or a silent default.
pub fn grpc_timeout(value: &[u8]) -> Result<Duration, Rejection> {
    let malformed = || {
        Rejection::Malformed(format!(
            "grpc-timeout header {:?} is not 1-8 digits and a unit (H, M, S, m, u, n)",
            String::from_utf8_lossy(&value[..value.len().min(32)])
        ))
    };
    let (unit, digits) = value.split_last().ok_or_else(malformed)?;
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return Err(malformed());
    }
    // At most 8 digits: fits a u64, and every unit below stays far from overflow.
    let n = digits
        .iter()
        .fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
    Ok(match unit {
        b'H' => Duration::from_secs(n * 3600),
        b'M' => Duration::from_secs(n * 60),
        b'S' => Duration::from_secs(n),
        b'm' => Duration::from_millis(n),
        b'u' => Duration::from_micros(n),
        b'n' => Duration::from_nanos(n),
        _ => return Err(malformed()),
    })
}

/// Step 4: how long the task has left. Version 1001 uses its signed deadline (at most
/// [`MAX_TASK_TIME`] ahead); version 1 the gRPC deadline of the call, else the AVS's
/// `task_timeout`, cut to [`MAX_TASK_TIME`].
pub fn time_left(
    task: &Task,
    grpc_timeout: Option<Duration>,
    avs: &AvsConfig,
) -> Result<Duration, Rejection> {
    let left = match task.deadline_unix_ms {
        Some(deadline) => {
            let now = now_unix_ms();
            if deadline <= now {
                return Err(Rejection::Deadline(format!(
                    "passed {} ms ago",
                    now - deadline
                )));
            }
            let left = Duration::from_millis(deadline - now);
            if left > MAX_TASK_TIME {
                return Err(Rejection::Malformed(format!(
                    "deadline_unix_ms {deadline} is {} s ahead, beyond the {} s a task may take",
                    left.as_secs(),
                    MAX_TASK_TIME.as_secs()
                )));
            }
            left
        }
        None => grpc_timeout.unwrap_or(avs.task_timeout).min(MAX_TASK_TIME),
    };
    if left < avs.min_execution_time {
        return Err(Rejection::Deadline(format!(
            "{} ms left, below the minimum execution time of {} ms",
            left.as_millis(),
            avs.min_execution_time.as_millis()
        )));
    }
    Ok(left)
}

/// Step 4 as the instant the task must be answered by, from `now`.
pub fn deadline(
    task: &Task,
    grpc_timeout: Option<Duration>,
    avs: &AvsConfig,
    now: Instant,
) -> Result<Instant, Rejection> {
    let left = time_left(task, grpc_timeout, avs)?;
    now.checked_add(left)
        .ok_or_else(|| Rejection::Malformed("the task's deadline is out of range".into()))
}

/// Step 5: the reference timestamp is neither older than `max_staleness` nor ahead of our clock
/// by more than `max_clock_skew`.
pub fn freshness(task: &Task, avs: &AvsConfig) -> Result<(), Rejection> {
    let now = now_unix_ms() / 1000;
    let ts = u64::from(task.reference_timestamp);
    if ts.saturating_add(avs.max_staleness.as_secs()) < now {
        return Err(Rejection::Stale {
            timestamp: task.reference_timestamp,
            why: format!(
                "{} s old, beyond max_staleness of {} s",
                now - ts,
                avs.max_staleness.as_secs()
            ),
        });
    }
    if ts > now.saturating_add(avs.max_clock_skew.as_secs()) {
        return Err(Rejection::Stale {
            timestamp: task.reference_timestamp,
            why: format!("{} s in the future, beyond max_clock_skew", ts - now),
        });
    }
    Ok(())
}

/// The hash the aggregator signed (DESIGN §4.1), over **our** operator address.
pub fn task_hash(task: &Task, operator: Address) -> [u8; 32] {
    TaskMessage {
        task_id: task.task_id,
        avs: task.avs,
        operator,
        operator_set_id: task.operator_set_id,
        reference_timestamp: task.reference_timestamp,
        task_block_number: task.task_block_number,
        payload: &task.payload,
        deadline_unix_ms: task.deadline_unix_ms,
    }
    .hash()
}

/// A task that passed every check: its AVS, its deadline, and the hash its aggregator signed.
#[derive(Debug)]
pub(super) struct Checked {
    /// The AVS it is for (its operator set is there).
    pub(super) avs: Arc<Avs>,
    /// When its answer is due.
    pub(super) deadline: tokio::time::Instant,
    /// The hash the aggregator signed (DESIGN §4.1): the single-flight key's last part.
    pub(super) h: [u8; 32],
}

impl Pipeline {
    /// DESIGN §3.1 steps 2–7, in this order and no other: addressee, AVS, payload size, operator
    /// set, deadline, freshness, aggregator, its TLS certificate, its rate limit, its signature.
    /// Lookups and comparisons come first, so a flood of bad tasks costs the node little; the
    /// per-aggregator rate limit comes before the signature check (the dear one), which runs
    /// last, at most one per core at a time.
    pub(super) async fn check(
        &self,
        task: &Task,
        grpc_timeout: Option<Duration>,
        peer: &Peer,
    ) -> Result<Checked, Rejection> {
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
        if !avs.operator_sets.contains_key(&task.operator_set_id) {
            return Err(Rejection::UnknownOperatorSet {
                avs: task.avs,
                id: task.operator_set_id,
            });
        }
        let deadline = tokio::time::Instant::from_std(deadline(
            task,
            grpc_timeout,
            &avs.config,
            std::time::Instant::now(),
        )?);
        freshness(task, &avs.config)?;
        // Listed in the file: known now. From chain: looked up after the rate limit, so a flood
        // of tasks spends its budget before it can cost an RPC call.
        let listed = match &avs.config.aggregators {
            Aggregators::Static(_) => Some(
                avs.aggregators
                    .get(&task.aggregator)
                    .cloned()
                    .ok_or(Rejection::UnknownAggregator(task.aggregator))?,
            ),
            Aggregators::FromChain => None,
        };
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

        let aggregator = match listed {
            Some(key) => key,
            None => self
                .chain
                .as_ref()
                .ok_or_else(|| internal("aggregators from chain without [chain]"))?
                .aggregator_key(task.avs, task.aggregator, task.task_block_number)
                .await
                .map_err(Rejection::from_chain)?
                .ok_or(Rejection::UnknownAggregator(task.aggregator))?,
        };
        let h = task_hash(task, self.operator);
        let verified = self
            .signatures
            .verify(&aggregator, h, &task.signature)
            .await?;
        if !verified {
            return Err(Rejection::BadSignature);
        }
        // Only a task its aggregator signed may cost a read of our own standing on chain.
        if let Some(chain) = &self.chain
            && let Some(key) = avs
                .operator_sets
                .get(&task.operator_set_id)
                .and_then(|set| set.chain_key.as_ref())
        {
            chain
                .check_executor(
                    task.avs,
                    task.operator_set_id,
                    self.operator,
                    task.task_block_number,
                    key,
                )
                .await
                .map_err(Rejection::from_chain)?;
        }
        drop(validate_timer);
        Ok(Checked { avs, deadline, h })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeout_header_units() {
        for (value, expected) in [
            ("10S", Some(Duration::from_secs(10))),
            ("9999m", Some(Duration::from_millis(9999))),
            ("2M", Some(Duration::from_secs(120))),
            ("5u", Some(Duration::from_micros(5))),
            ("7n", Some(Duration::from_nanos(7))),
            ("99999999H", Some(Duration::from_secs(99_999_999 * 3600))),
            ("18446744073709551615S", None),
            ("123456789S", None),
            ("x", None),
            ("10", None),
            ("S", None),
            ("-1S", None),
            ("+1S", None),
            ("1 S", None),
            ("10s", None),
            ("", None),
        ] {
            assert_eq!(grpc_timeout(value.as_bytes()).ok(), expected, "{value}");
        }
        let error = grpc_timeout(b"18446744073709551615S").unwrap_err();
        assert_eq!(error.code(), tonic::Code::InvalidArgument);
        assert!(error.to_string().contains("grpc-timeout"), "{error}");
    }

    fn submission() -> TaskSubmission {
        TaskSubmission {
            task_id: format!("0x{}", "11".repeat(32)),
            aggregator_address: format!("0x{}", "aa".repeat(20)),
            avs_address: format!("0x{}", "bb".repeat(20)),
            executor_address: format!("0x{}", "cc".repeat(20)),
            operator_set_id: 3,
            reference_timestamp: 1_700_000_000,
            task_block_number: 7,
            payload: b"payload".to_vec(),
            signature: vec![1; 65],
            version: HOURGLASS_TASK_VERSION,
            ..TaskSubmission::default()
        }
    }

    #[test]
    fn shape_parses_a_well_formed_task_and_names_the_first_bad_field() {
        let task = shape(submission()).expect("well formed");
        assert_eq!(task.operator_set_id, 3);
        assert_eq!(task.deadline_unix_ms, None);
        assert_eq!(task.task_id_wire, submission().task_id);

        type Spoil = fn(&mut TaskSubmission);
        let cases: [(&str, Spoil); 5] = [
            ("avs_address", |s| s.avs_address = "0x12".into()),
            ("signature is empty", |s| s.signature.clear()),
            ("reference_timestamp is 0", |s| s.reference_timestamp = 0),
            ("without deadline_unix_ms", |s| {
                s.version = SIGNED_DEADLINE_TASK_VERSION;
            }),
            ("unsupported version 2", |s| s.version = 2),
        ];
        for (expected, spoil) in cases {
            let mut sub = submission();
            spoil(&mut sub);
            let error = shape(sub).expect_err(expected);
            assert_eq!(error.code(), tonic::Code::InvalidArgument, "{expected}");
            assert!(error.to_string().contains(expected), "{error} / {expected}");
        }

        let mut signed = submission();
        signed.version = SIGNED_DEADLINE_TASK_VERSION;
        signed.deadline_unix_ms = 1_700_000_123_000;
        assert_eq!(
            shape(signed).expect("signed deadline").deadline_unix_ms,
            Some(1_700_000_123_000)
        );
    }
}
