//! The one ledger interface the pipeline, the CLI and the remote signer use, over either backend:
//! the embedded redb ledger of one node ([`EmbeddedLedger`]) or the PostgreSQL ledger shared by
//! replicas ([`PgLedger`]).
//!
//! A task goes `claim` → (run the performer) → `sign_once`:
//!
//! - [`Ledger::claim`] answers from a signed record, hands out a [`Ticket`] to run the task (or to
//!   re-sign the digest another attempt sealed), or — on PostgreSQL, while another replica holds
//!   the task — waits for that replica's record, bounded;
//! - [`Ledger::sign_once`] with the ticket computes the digest, seals it (PostgreSQL) before
//!   calling `sign`, and returns the committed record, whose signatures are the only ones that
//!   may leave.
//!
//! On the embedded ledger a claim is a read (the pipeline's single flight keeps one attempt per
//! task in the process) and `sign_once` is [`EmbeddedLedger::sign_once`].

use std::future::Future;
use std::io::{Read, Write};
use std::time::Duration;

use avsnode_signer::messages::{ResultCertificate, SigningDigest, certificate_digest};
use tokio::time::Instant;

use crate::postgres::{Lease, PgLedger};
use crate::{
    Claim, EmbeddedLedger, ImportSummary, LedgerError, LedgerStats, Origin, Record, RecordKey,
    Refusal, SignOnceError, Signatures, Signed,
};

/// The sign-once ledger, on one of its two backends. Cheap to clone.
#[derive(Debug, Clone)]
pub enum Ledger {
    /// redb in the node's data directory: one node.
    Embedded(EmbeddedLedger),
    /// PostgreSQL: several replicas of one operator.
    Postgres(PgLedger),
}

/// What [`Ledger::claim`] found.
#[derive(Debug)]
pub enum Claimed {
    /// The task is signed: answer from this record if it [answers](Record::answers) the request.
    Signed(Record),
    /// Run the performer, then [`Ledger::sign_once`] with this ticket.
    Run(Ticket),
    /// A digest is sealed for the task (an earlier attempt's, which stopped before recording):
    /// sign the record's output again with this ticket; the performer is not run again.
    Sealed(Ticket, Box<Record>),
    /// Another replica holds the task (only from [`PgLedger`]; [`Ledger::claim`] waits it out).
    Busy,
}

/// The right to sign one task, from [`Ledger::claim`]. On PostgreSQL it holds the claim and
/// renews its lease in the background until it is used or dropped.
#[derive(Debug)]
pub struct Ticket {
    key: RecordKey,
    lease: Option<Lease>,
    /// How long each renewal (and the seal) holds the claim.
    hold: Duration,
    sealed: Option<[u8; 32]>,
    renewal: Option<tokio::task::AbortHandle>,
}

impl Ticket {
    fn embedded(key: RecordKey) -> Ticket {
        Ticket {
            key,
            lease: None,
            hold: Duration::ZERO,
            sealed: None,
            renewal: None,
        }
    }

    pub(crate) fn leased(lease: Lease) -> Ticket {
        Ticket {
            key: *lease.key(),
            lease: Some(lease),
            hold: Duration::ZERO,
            sealed: None,
            renewal: None,
        }
    }

    pub(crate) fn sealed(mut self, digest: [u8; 32]) -> Ticket {
        self.sealed = Some(digest);
        self
    }

    /// The record key this ticket is for.
    pub fn key(&self) -> &RecordKey {
        &self.key
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if let Some(renewal) = self.renewal.take() {
            renewal.abort();
        }
    }
}

impl Ledger {
    /// Which backend: `embedded` or `postgres` (for logs, `/readyz` and `check-config`).
    pub fn backend(&self) -> &'static str {
        match self {
            Ledger::Embedded(_) => "embedded",
            Ledger::Postgres(_) => "postgres",
        }
    }

    /// The signed record of `key`, if any (the embedded ledger also returns an unsigned record
    /// left by an older avsnode). The pipeline's fast path is [`Ledger::claim`], which reads it.
    pub async fn lookup(&self, key: &RecordKey) -> Result<Option<Record>, LedgerError> {
        match self {
            Ledger::Embedded(l) => l.lookup(key),
            Ledger::Postgres(l) => l.lookup(key).await,
        }
    }

    /// Asks the database whether it answers (PostgreSQL; the embedded ledger always does), which
    /// also lets the ledger notice it is back after an outage without waiting for a task.
    pub async fn probe(&self) -> Result<(), LedgerError> {
        match self {
            Ledger::Embedded(_) => Ok(()),
            Ledger::Postgres(l) => l.schema_version().await.map(drop),
        }
    }

    /// Claims `key` for a request from `origin` with `reference_timestamp`. On PostgreSQL the
    /// claim's lease is `lease`, renewed every third of it while the ticket lives; a task another
    /// replica holds is asked for again (5 ms, doubling to 100 ms) until it is signed, its lease
    /// runs out (then it is taken over), or `wait_until` passes ([`LedgerError::Busy`]). A
    /// record for another origin or reference timestamp is a [`LedgerError::Conflict`].
    pub async fn claim(
        &self,
        key: &RecordKey,
        origin: Origin,
        reference_timestamp: u32,
        lease: Duration,
        wait_until: Instant,
    ) -> Result<Claimed, LedgerError> {
        let claimed = match self {
            Ledger::Embedded(l) => match l.lookup(key)? {
                Some(record) if record.signatures.is_some() => Claimed::Signed(record),
                Some(record) => {
                    let ticket = Ticket::embedded(*key).sealed(record.digest);
                    Claimed::Sealed(ticket, Box::new(record))
                }
                None => Claimed::Run(Ticket::embedded(*key)),
            },
            Ledger::Postgres(pg) => {
                let mut pause = Duration::from_millis(5);
                loop {
                    match pg.claim(key, origin, reference_timestamp, lease).await? {
                        Claimed::Busy if Instant::now() + pause < wait_until => {
                            tokio::time::sleep(pause).await;
                            pause = (pause * 2).min(Duration::from_millis(100));
                        }
                        Claimed::Busy => {
                            return Err(LedgerError::Busy {
                                task_id: key.task_id,
                            });
                        }
                        Claimed::Run(ticket) => break Claimed::Run(renewing(pg, ticket, lease)),
                        Claimed::Sealed(ticket, record) => {
                            break Claimed::Sealed(renewing(pg, ticket, lease), record);
                        }
                        signed @ Claimed::Signed(_) => break signed,
                    }
                }
            }
        };
        // A record for another origin or reference timestamp answers nothing of this request.
        let held = match &claimed {
            Claimed::Signed(record) => Some(record),
            Claimed::Sealed(_, record) => Some(&**record),
            Claimed::Run(_) | Claimed::Busy => None,
        };
        if let Some(record) = held
            && let Err(refusal) = record.admits(origin, reference_timestamp)
        {
            return Err(self.refuse(key, refusal));
        }
        Ok(claimed)
    }

    /// Logs and counts a refusal.
    fn refuse(&self, key: &RecordKey, refusal: Refusal) -> LedgerError {
        match self {
            Ledger::Embedded(l) => l.refuse(key, refusal),
            Ledger::Postgres(l) => l.refuse(key, refusal),
        }
    }

    /// Requests refused because the ledger holds their task for another origin or digest.
    pub fn conflicts(&self) -> u64 {
        match self {
            Ledger::Embedded(l) => l.stats().conflicts,
            Ledger::Postgres(l) => l.conflicts(),
        }
    }

    /// Signs `claim` once with `ticket` (DESIGN §5): computes the certificate digest, refuses a
    /// digest other than one already sealed or recorded, seals it (PostgreSQL) before calling
    /// `sign`, then commits the signatures and returns the committed record. Answer from the
    /// returned record only. On PostgreSQL a ticket whose claim was lost gets
    /// [`LedgerError::ClaimLost`] and nothing is released.
    pub async fn sign_once<F, Fut, E>(
        &self,
        ticket: Ticket,
        certificate: &ResultCertificate,
        claim: Claim,
        sign: F,
    ) -> Result<Signed, SignOnceError<E>>
    where
        F: FnOnce(SigningDigest) -> Fut,
        Fut: Future<Output = Result<Signatures, E>>,
    {
        let (pg, lease) = match (self, &ticket.lease) {
            (Ledger::Embedded(l), _) => {
                return l
                    .sign_once(ticket.key.key_id, certificate, claim, sign)
                    .await;
            }
            (Ledger::Postgres(pg), Some(lease)) => (pg, lease),
            (Ledger::Postgres(_), None) => {
                return Err(LedgerError::InvalidProposal {
                    task_id: ticket.key.task_id,
                    problem: "a ticket of the embedded ledger used with PostgreSQL",
                }
                .into());
            }
        };
        let (_, digest) = certificate_digest(
            certificate,
            &claim.task_id,
            claim.reference_timestamp,
            &claim.output,
        );
        match ticket.sealed {
            Some(sealed) if sealed != *digest.as_bytes() => {
                return Err(self.refuse(&ticket.key, Refusal::OtherOutput).into());
            }
            Some(_) => {}
            None => pg.seal(lease, &claim.output, &digest, ticket.hold).await?,
        }
        let signatures = match sign(digest).await {
            Ok(signatures) => signatures,
            Err(e) => {
                // The digest stays sealed; the next attempt signs it at once.
                if let Err(release) = pg.release(lease).await {
                    tracing::warn!(error = %release, "releasing a claim after a signing failure");
                }
                return Err(SignOnceError::Sign(e));
            }
        };
        let record = pg.record(lease, &digest, &signatures).await?;
        Ok(Signed {
            record,
            fresh: true,
        })
    }

    /// [`Ledger::claim`] and [`Ledger::sign_once`] in one, for a caller that has the output
    /// already (the remote signer): a signed record answers only the very digest it holds.
    pub async fn claim_and_sign<F, Fut, E>(
        &self,
        key_id: [u8; 32],
        certificate: &ResultCertificate,
        claim: Claim,
        lease: Duration,
        wait_until: Instant,
        sign: F,
    ) -> Result<Signed, SignOnceError<E>>
    where
        F: FnOnce(SigningDigest) -> Fut,
        Fut: Future<Output = Result<Signatures, E>>,
    {
        let key = RecordKey::new(key_id, certificate, claim.task_id);
        let claimed = self
            .claim(
                &key,
                claim.origin,
                claim.reference_timestamp,
                lease,
                wait_until,
            )
            .await?;
        match claimed {
            Claimed::Signed(record) => {
                let (_, digest) = certificate_digest(
                    certificate,
                    &claim.task_id,
                    claim.reference_timestamp,
                    &claim.output,
                );
                record
                    .permits(claim.origin, claim.reference_timestamp, digest.as_bytes())
                    .map_err(|refusal| self.refuse(&key, refusal))?;
                Ok(Signed {
                    record,
                    fresh: false,
                })
            }
            Claimed::Run(ticket) | Claimed::Sealed(ticket, _) => {
                self.sign_once(ticket, certificate, claim, sign).await
            }
            Claimed::Busy => Err(LedgerError::Busy {
                task_id: key.task_id,
            }
            .into()),
        }
    }

    /// Gives up a ticket without signing (the performer failed): on PostgreSQL the claim is
    /// freed at once for the next attempt, on any replica.
    pub async fn release(&self, ticket: Ticket) {
        if let (Ledger::Postgres(pg), Some(lease)) = (self, &ticket.lease)
            && let Err(e) = pg.release(lease).await
        {
            tracing::warn!(error = %e, "releasing a claim");
        }
    }

    /// Removes records of tasks older than `older_than` (embedded: by when they were recorded;
    /// PostgreSQL: by reference timestamp, raising each key's watermark so a pruned task is
    /// refused for ever). Returns how many went.
    pub async fn prune(&self, older_than: Duration) -> Result<u64, LedgerError> {
        let cutoff = std::time::SystemTime::now()
            .checked_sub(older_than)
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .unwrap_or_default();
        match self {
            Ledger::Embedded(l) => {
                let l = l.clone();
                let ms = u64::try_from(cutoff.as_millis()).unwrap_or(u64::MAX);
                tokio::task::spawn_blocking(move || l.prune(ms))
                    .await
                    .map_err(|_| LedgerError::Closed)?
            }
            Ledger::Postgres(l) => {
                l.prune(u32::try_from(cutoff.as_secs()).unwrap_or(u32::MAX))
                    .await
            }
        }
    }

    /// Records held.
    pub async fn len(&self) -> Result<u64, LedgerError> {
        match self {
            Ledger::Embedded(l) => l.len(),
            Ledger::Postgres(l) => l.len().await,
        }
    }

    /// Whether the ledger holds no record.
    pub async fn is_empty(&self) -> Result<bool, LedgerError> {
        self.len().await.map(|n| n == 0)
    }

    /// Writes every record as JSON (`export.rs`); returns how many.
    pub async fn export_json(&self, out: &mut dyn Write) -> Result<u64, LedgerError> {
        match self {
            Ledger::Embedded(l) => l.export_json(out),
            Ledger::Postgres(l) => l.export_json(out).await,
        }
    }

    /// Merges an export in one transaction, refusing (and writing nothing) if any record
    /// conflicts with a held one.
    pub async fn import_json(
        &self,
        input: &mut dyn Read,
        verifier_versions: &[String],
    ) -> Result<ImportSummary, LedgerError> {
        match self {
            Ledger::Embedded(l) => l.import_json(input, verifier_versions),
            Ledger::Postgres(l) => l.import_json(input, verifier_versions).await,
        }
    }

    /// The embedded ledger's group-commit counters (PostgreSQL: its conflicts only).
    pub fn stats(&self) -> LedgerStats {
        match self {
            Ledger::Embedded(l) => l.stats(),
            Ledger::Postgres(l) => LedgerStats {
                conflicts: l.conflicts(),
                ..LedgerStats::default()
            },
        }
    }

    /// Statements sent to the database on the signing path so far (each one round trip; zero
    /// for the embedded ledger).
    pub fn round_trips(&self) -> u64 {
        match self {
            Ledger::Embedded(_) => 0,
            Ledger::Postgres(l) => l.statements(),
        }
    }

    /// Why the ledger cannot serve now (PostgreSQL unreachable), if so.
    pub fn unavailable(&self) -> Option<String> {
        match self {
            Ledger::Embedded(_) => None,
            Ledger::Postgres(l) => l.unavailable(),
        }
    }

    /// Flushes what is queued and drops this handle (the embedded ledger's lock is released
    /// once the last clone is gone).
    pub async fn close(self) -> Result<(), LedgerError> {
        match self {
            Ledger::Embedded(l) => l.close().await,
            Ledger::Postgres(_) => Ok(()),
        }
    }
}

/// Starts renewing `ticket`'s lease every third of `lease` until the ticket is dropped.
fn renewing(pg: &PgLedger, mut ticket: Ticket, lease: Duration) -> Ticket {
    ticket.hold = lease;
    let Some(held) = ticket.lease.clone() else {
        return ticket;
    };
    let pg = pg.clone();
    let task = tokio::spawn(async move {
        let mut every = tokio::time::interval(lease / 3);
        every.tick().await;
        loop {
            every.tick().await;
            match pg.renew(&held, lease).await {
                Ok(true) => {}
                Ok(false) => return,
                Err(e) => tracing::debug!(error = %e, "renewing a claim"),
            }
        }
    });
    ticket.renewal = Some(task.abort_handle());
    ticket
}
