//! Why a task was not signed, and the one mapping from that to a gRPC status and a metric reason
//! label (DESIGN §3.1).

use avsnode_signer::messages::{Address, TaskId};
use tonic::Code;

/// A task the node refused or could not complete. Messages name the bad input and never carry
/// payloads, signatures or keys.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Rejection {
    /// A field is missing or malformed.
    #[error("malformed task: {0}")]
    Malformed(String),
    /// A `version` other than 1 (Hourglass) or 1001 (avsnode's signed deadline), a future
    /// Hourglass version included.
    #[error("unsupported version {0} (supported: 1, and 1001 for avsnode's signed deadline)")]
    UnsupportedVersion(u32),
    /// The payload is over the AVS's limit.
    #[error("payload of {size} bytes exceeds this AVS's limit of {limit} bytes")]
    PayloadTooLarge {
        /// Its size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// `executor_address` is not this operator.
    #[error("task is addressed to executor {got}, but this node is operator {ours}")]
    WrongExecutor {
        /// The task's executor address.
        got: Address,
        /// Ours.
        ours: Address,
    },
    /// The AVS is not configured here.
    #[error("AVS {0} is not served by this node")]
    UnknownAvs(Address),
    /// The operator set is not configured for the AVS.
    #[error("operator set {id} of AVS {avs} is not served by this node")]
    UnknownOperatorSet {
        /// The AVS.
        avs: Address,
        /// The set.
        id: u32,
    },
    /// The deadline has passed or leaves too little time.
    #[error("deadline: {0}")]
    Deadline(String),
    /// `reference_timestamp` is too old or in the future.
    #[error("reference timestamp {timestamp} is {why}")]
    Stale {
        /// The task's reference timestamp.
        timestamp: u32,
        /// How it is off.
        why: String,
    },
    /// The aggregator is not configured for the AVS.
    #[error("aggregator {0} is not allowed to send tasks for this AVS")]
    UnknownAggregator(Address),
    /// Mutual TLS: the connection's client certificate is not the one configured for the
    /// aggregator the task names.
    #[error(
        "aggregator {0} is not allowed over this connection: its client certificate is valid for none of the names configured for it (tls_client_names)"
    )]
    ClientCertificate(Address),
    /// The aggregator's signature does not verify.
    #[error("the aggregator's task signature does not verify")]
    BadSignature,
    /// The aggregator sent more than its rate limit from this address.
    #[error("aggregator {0} is over its rate limit for this AVS; slow down")]
    RateLimited(Address),
    /// The node holds `intake.max_tasks_in_memory` tasks already.
    #[error("the node is holding its limit of {0} tasks; retry later")]
    Overloaded(usize),
    /// The AVS's queue is full.
    #[error("the AVS's task queue is full ({0} waiting); retry later")]
    QueueFull(usize),
    /// The performer is not serving (failed, restarting, unreachable).
    #[error("performer unavailable: {0}")]
    PerformerUnavailable(String),
    /// The performer did not answer in time.
    #[error("the performer did not answer before the task's deadline")]
    PerformerTimeout,
    /// The performer answered with an error status (passed through).
    #[error("the performer failed the task: {message}")]
    PerformerError {
        /// Its status code.
        code: Code,
        /// Its message.
        message: String,
    },
    /// The performer's output is over the cap.
    #[error("performer output of {size} bytes exceeds the limit of {limit} bytes")]
    OutputTooLarge {
        /// Its size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The performer echoed another task id.
    #[error("the performer answered for another task id (a performer fault)")]
    WrongEcho,
    /// The result arrived after the deadline; it is not signed.
    #[error("the performer's result arrived after the task's deadline; not signed")]
    LateResult,
    /// The ledger (or the remote signer's) holds this task signed for another origin, reference
    /// timestamp or output: never signed twice.
    #[error("task {task_id}: {why}; not signed again")]
    Conflict {
        /// The task.
        task_id: TaskId,
        /// What was signed before (`already signed with … for …, not …`), or the remote signer's
        /// refusal.
        why: String,
    },
    /// The key's token or remote signer cannot be reached (retryable).
    #[error("{0}")]
    SignerUnavailable(String),
    /// The signing backend failed otherwise.
    #[error("{0}")]
    SignerFailed(String),
    /// The sign-once ledger's database cannot be reached now (retryable; nothing was signed).
    #[error("the sign-once ledger is unavailable: {0}")]
    LedgerUnavailable(String),
    /// Another replica is running this task (retryable: the retry gets its answer).
    #[error("{0}")]
    ReplicaBusy(String),
    /// A chain check could not be made: no RPC endpoint answered, or the cached facts are older
    /// than `chain.serve_cached_for` (retryable; nothing was run or signed).
    #[error("{0}")]
    ChainUnavailable(String),
    /// The chain disagrees (not a member, not an executor set, another key registered): this
    /// node must not sign for the set.
    #[error("refused by the chain: {0}")]
    ChainRefused(avsnode_chain::Refusal),
    /// The node is shutting down.
    #[error("the node is shutting down")]
    ShuttingDown,
    /// Something inside the node failed (ledger I/O, a panicked task).
    #[error("internal error: {0}")]
    Internal(String),
}

impl Rejection {
    /// The gRPC status code (DESIGN §3.1).
    pub fn code(&self) -> Code {
        use Rejection::*;
        match self {
            Malformed(_) | UnsupportedVersion(_) | PayloadTooLarge { .. } => Code::InvalidArgument,
            WrongExecutor { .. } | UnknownAggregator(_) | ClientCertificate(_) | BadSignature => {
                Code::PermissionDenied
            }
            UnknownAvs(_) | UnknownOperatorSet { .. } => Code::NotFound,
            Deadline(_) | PerformerTimeout | LateResult => Code::DeadlineExceeded,
            Stale { .. } | Conflict { .. } | ChainRefused(_) => Code::FailedPrecondition,
            QueueFull(_) | RateLimited(_) | Overloaded(_) => Code::ResourceExhausted,
            PerformerUnavailable(_)
            | SignerUnavailable(_)
            | LedgerUnavailable(_)
            | ReplicaBusy(_)
            | ChainUnavailable(_)
            | ShuttingDown => Code::Unavailable,
            PerformerError { code, .. } => *code,
            OutputTooLarge { .. } | WrongEcho | SignerFailed(_) | Internal(_) => Code::Internal,
        }
    }

    /// The low-cardinality reason label for metrics and logs.
    pub fn reason(&self) -> &'static str {
        use Rejection::*;
        match self {
            Malformed(_) => "malformed",
            UnsupportedVersion(_) => "unsupported_version",
            PayloadTooLarge { .. } => "payload_too_large",
            WrongExecutor { .. } => "wrong_executor",
            UnknownAvs(_) => "unknown_avs",
            UnknownOperatorSet { .. } => "unknown_operator_set",
            Deadline(_) => "deadline",
            Stale { .. } => "stale",
            UnknownAggregator(_) => "unknown_aggregator",
            ClientCertificate(_) => "client_certificate",
            BadSignature => "bad_signature",
            QueueFull(_) => "queue_full",
            RateLimited(_) => "rate_limited",
            Overloaded(_) => "node_overloaded",
            PerformerUnavailable(_) => "performer_unavailable",
            PerformerTimeout => "performer_timeout",
            PerformerError { .. } => "performer_error",
            OutputTooLarge { .. } => "output_too_large",
            WrongEcho => "performer_echo",
            LateResult => "late_result",
            Conflict { .. } => "ledger_conflict",
            SignerUnavailable(_) => "signer_unavailable",
            SignerFailed(_) => "signer_error",
            LedgerUnavailable(_) => "ledger_unavailable",
            ReplicaBusy(_) => "replica_busy",
            ChainUnavailable(_) => "chain_unavailable",
            ChainRefused(refusal) => refusal.label(),
            ShuttingDown => "shutting_down",
            Internal(_) => "internal",
        }
    }

    /// Whether the task failed on the node's or the performer's side (outcome `failed`) rather
    /// than being refused by a check (outcome `rejected`).
    pub fn is_failure(&self) -> bool {
        use Rejection::*;
        matches!(
            self,
            PerformerUnavailable(_)
                | PerformerTimeout
                | PerformerError { .. }
                | OutputTooLarge { .. }
                | WrongEcho
                | LateResult
                | SignerUnavailable(_)
                | SignerFailed(_)
                | LedgerUnavailable(_)
                | ReplicaBusy(_)
                | ChainUnavailable(_)
                | ShuttingDown
                | Internal(_)
        )
    }

    /// From a chain check's error.
    pub fn from_chain(error: avsnode_chain::ChainError) -> Rejection {
        match error {
            avsnode_chain::ChainError::Unavailable(why) => Rejection::ChainUnavailable(why),
            avsnode_chain::ChainError::Refused(refusal) => Rejection::ChainRefused(refusal),
        }
    }

    /// The status sent to the caller.
    pub fn to_status(&self) -> tonic::Status {
        tonic::Status::new(self.code(), self.to_string())
    }
}
