//! Signing, DESIGN §3.1 step 11 and §5: sign through the one [`Ledger::sign_once`], answer from
//! the committed record, and answer a retry from a signed record only when it asks for exactly
//! what was signed.
//!
//! [`Ledger::sign_once`]: avsnode_ledger::Ledger::sign_once

use avsnode_ledger::{
    Claim, LedgerError, Origin, Record, Refusal, SignOnceError, Signatures, Signed, Ticket,
};
use avsnode_proto::executor::TaskResult;
use avsnode_signing::SignError;
use avsnode_signing::remote::SignFields;
use tokio::time::Instant;
use tracing::{debug, error};

use super::validate::Task;
use super::{Avs, OperatorSet, Outcome, Pipeline, internal};
use crate::pipeline::rejection::Rejection;

impl Pipeline {
    /// Step 11: sign `output` and commit it through [`Ledger::sign_once`]; the answer is built
    /// from the committed record alone.
    pub(super) async fn sign_and_commit(
        &self,
        avs: &Avs,
        set: &OperatorSet,
        task: &Task,
        ticket: Ticket,
        output: Vec<u8>,
        deadline: Instant,
    ) -> Outcome {
        let m = &self.metrics;
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
            .sign_once(ticket, &set.certificate, claim, sign)
            .await;
        let Signed { record, fresh } = match signed {
            Ok(signed) => signed,
            Err(SignOnceError::Ledger(e)) => return Err(self.ledger_rejection(avs, task, e)),
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

    /// Answers from a signed record — only a request from the record's own AVS and operator set
    /// that asks for the very digest that was signed. Anything else (another origin sharing the
    /// key, another reference timestamp) is refused, never answered with signatures that do not
    /// match it, and never signed.
    pub(super) fn answer_from_record(
        &self,
        task: &Task,
        set: &OperatorSet,
        record: &Record,
    ) -> Outcome {
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

    /// What the caller hears when the ledger refuses or fails: a conflict (never signed twice),
    /// or UNAVAILABLE when the database is out of reach or another replica holds the task (a
    /// retry gets the answer), counted in `avsnode_ledger_unavailable_total`.
    pub(super) fn ledger_rejection(&self, avs: &Avs, task: &Task, e: LedgerError) -> Rejection {
        match e {
            LedgerError::Conflict { refusal, .. } => conflict(task, refusal),
            LedgerError::Pruned { .. } => Rejection::Conflict {
                task_id: task.task_id,
                why: e.to_string(),
            },
            LedgerError::Busy { .. } => Rejection::ReplicaBusy(e.to_string()),
            LedgerError::Unavailable { .. } | LedgerError::ClaimLost { .. } => {
                self.metrics
                    .ledger_unavailable
                    .with_label_values(&[avs.label.as_str()])
                    .inc();
                Rejection::LedgerUnavailable(e.to_string())
            }
            e => internal(e),
        }
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

/// The answer to a task the ledger refuses: what was signed before, and not for this request.
fn conflict(task: &Task, refusal: Refusal) -> Rejection {
    Rejection::Conflict {
        task_id: task.task_id,
        why: format!("already {refusal}"),
    }
}

/// The AVS and operator set a task is for.
pub(super) fn origin(task: &Task) -> Origin {
    Origin {
        avs: task.avs,
        operator_set_id: task.operator_set_id,
    }
}
