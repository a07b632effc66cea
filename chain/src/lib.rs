//! What avsnode reads from L1 (`[chain]`; docs/OPERATING.md "Reading from chain"): the
//! aggregator keys an AVS registered in KeyRegistrar, and whether this operator is a member of a
//! task's operator set, that set is one of the AVS's executor sets and the key registered for us
//! is the key we sign with.
//!
//! Every fact is read at the task's block and cached with the blocks it holds for
//! ([`cache`]); a log follower ([`Chain::follow`]) closes a fact's range when an event may have
//! changed it and handles reorgs. In steady state a task makes no RPC call; the facts a task is
//! missing are read as one JSON-RPC batch per dependency step (registrar → its config → the
//! set's curve type → the key), and only one such read runs at a time, so a flood of tasks
//! naming unknown aggregators costs the chain one batch at a time.
//!
//! When no endpoint answers, cached facts keep serving for `serve_cached_for` after the
//! follower's last successful round; after that every chain check is UNAVAILABLE until an
//! endpoint answers again.

mod abi;
mod cache;
mod rpc;

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use alloy_primitives::{Address as EvmAddress, B256, Bytes, U256};
use alloy_sol_types::{SolCall, SolEvent};
use avsnode_metrics::Metrics;
use avsnode_signer::bn254::G2PublicKey;
use avsnode_signer::messages::Address;
use avsnode_signer::{Scheme, VerifyingKey};
use serde_json::{Value, json};
use tracing::{info, warn};

pub use cache::RegisteredKey;
use cache::{Cache, Fact, FactKey};
/// An RPC endpoint's URL.
pub use hyper::Uri;
use rpc::{CallError, Rpc};

/// What the node needs to read the chain (`[chain]`, checked by the node's configuration).
/// `Debug` shows each URL's scheme and host only (the rest may be an API key).
#[derive(Clone)]
pub struct Settings {
    /// JSON-RPC endpoints, tried in order (failover).
    pub rpc_urls: Vec<Uri>,
    /// The chain id every endpoint must report.
    pub chain_id: u64,
    /// The AllocationManager's address.
    pub allocation_manager: Address,
    /// The KeyRegistrar's address.
    pub key_registrar: Address,
    /// Blocks behind head the follower reads logs to.
    pub follow_distance: u64,
    /// How often the follower polls.
    pub poll_interval: Duration,
    /// How long cached facts serve after the follower's last successful round.
    pub serve_cached_for: Duration,
    /// Bound on each HTTP request.
    pub request_timeout: Duration,
    /// Largest block range of one log query.
    pub max_log_range: u64,
    /// Facts cached at most.
    pub cache_capacity: usize,
}

/// An RPC URL as it may be shown: its scheme and host (the path or query often is an API key).
pub fn redacted(url: &Uri) -> String {
    format!(
        "{}://{}/…",
        url.scheme_str().unwrap_or("?"),
        url.host().unwrap_or("?")
    )
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let urls: Vec<String> = self.rpc_urls.iter().map(redacted).collect();
        f.debug_struct("Settings")
            .field("rpc_urls", &urls)
            .field("chain_id", &self.chain_id)
            .field("allocation_manager", &self.allocation_manager)
            .field("key_registrar", &self.key_registrar)
            .field("follow_distance", &self.follow_distance)
            .field("poll_interval", &self.poll_interval)
            .field("serve_cached_for", &self.serve_cached_for)
            .field("request_timeout", &self.request_timeout)
            .field("max_log_range", &self.max_log_range)
            .field("cache_capacity", &self.cache_capacity)
            .finish()
    }
}

/// Why a chain check did not pass.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ChainError {
    /// No answer (or facts too old to serve): the task may be retried.
    #[error("chain unavailable: {0}")]
    Unavailable(String),
    /// The chain says no: the node must not sign.
    #[error("{0}")]
    Refused(Refusal),
}

/// What the chain disagrees with.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Refusal {
    /// `isMemberOfOperatorSet` is false.
    #[error("operator {operator} is not a member of operator set {avs}/{set} on chain")]
    NotMember {
        /// The operator.
        operator: Address,
        /// The AVS.
        avs: Address,
        /// The set.
        set: u32,
    },
    /// The set is not one of the registrar's `executorOperatorSetIds`.
    #[error(
        "operator set {set} is not an executor set of AVS {avs} on chain (its executor sets: {executor_sets:?})"
    )]
    NotExecutorSet {
        /// The AVS.
        avs: Address,
        /// The set.
        set: u32,
        /// What `getAvsConfig` lists.
        executor_sets: Vec<u32>,
    },
    /// The set's curve type on chain is not the signer's scheme.
    #[error("operator set {avs}/{set} has curve type {curve} on chain, but its signer is {scheme}")]
    CurveType {
        /// The AVS.
        avs: Address,
        /// The set.
        set: u32,
        /// KeyRegistrar's curve type (0 none, 1 ECDSA, 2 BN254).
        curve: u8,
        /// The signer's scheme.
        scheme: Scheme,
    },
    /// No key registered for this operator in the set.
    #[error("no key is registered on chain for operator {operator} in operator set {avs}/{set}")]
    KeyNotRegistered {
        /// The operator.
        operator: Address,
        /// The AVS.
        avs: Address,
        /// The set.
        set: u32,
    },
    /// Another key is registered for this operator than the one it signs with.
    #[error(
        "the key registered on chain for operator set {avs}/{set} is {registered}, but its signer's key is {ours}"
    )]
    KeyMismatch {
        /// The AVS.
        avs: Address,
        /// The set.
        set: u32,
        /// The registered key (address, or the start of the G2 key).
        registered: String,
        /// Ours.
        ours: String,
    },
    /// The AVS's registrar does not answer `getAvsConfig` as a TaskAVSRegistrar does.
    #[error("AVS {avs}'s registrar {registrar} has no task AVS config on chain ({why})")]
    NoAvsConfig {
        /// The AVS.
        avs: Address,
        /// Its registrar.
        registrar: Address,
        /// The revert or decoding error.
        why: String,
    },
    /// The endpoint serves another chain.
    #[error("the chain RPC serves chain id {got}, not the configured chain_id {expected}")]
    WrongChain {
        /// `chain.chain_id`.
        expected: u64,
        /// What `eth_chainId` answered.
        got: u64,
    },
}

impl Refusal {
    /// The metric reason label (`avsnode_task_rejections_total{reason}`).
    pub fn label(&self) -> &'static str {
        match self {
            Refusal::NotMember { .. } => "chain_not_member",
            Refusal::NotExecutorSet { .. } => "chain_not_executor_set",
            Refusal::CurveType { .. } => "chain_curve_type",
            Refusal::KeyNotRegistered { .. } => "chain_key_not_registered",
            Refusal::KeyMismatch { .. } => "chain_key_mismatch",
            Refusal::NoAvsConfig { .. } => "chain_no_avs_config",
            Refusal::WrongChain { .. } => "chain_wrong_chain_id",
        }
    }
}

/// The key an operator set signs with, as the chain would hold it.
#[derive(Debug, Clone, PartialEq)]
pub enum OurKey {
    /// An ECDSA signer's address.
    Ecdsa(Address),
    /// A BN254 signer's G2 key (128-byte wire form).
    Bn254([u8; 128]),
    /// BLS12-381: KeyRegistrar has no such curve; only membership is checked.
    Bls12381,
}

impl OurKey {
    /// From a signer's scheme and public bytes (the address, or the G2 key's wire form).
    pub fn new(scheme: Scheme, public_bytes: &[u8]) -> Option<OurKey> {
        match scheme {
            Scheme::Ecdsa => Some(OurKey::Ecdsa(Address(public_bytes.try_into().ok()?))),
            Scheme::Bn254 => Some(OurKey::Bn254(public_bytes.try_into().ok()?)),
            Scheme::Bls12381 => Some(OurKey::Bls12381),
        }
    }

    fn scheme(&self) -> Scheme {
        match self {
            OurKey::Ecdsa(_) => Scheme::Ecdsa,
            OurKey::Bn254(_) => Scheme::Bn254,
            OurKey::Bls12381 => Scheme::Bls12381,
        }
    }
}

/// What the chain says of an operator in an operator set.
#[derive(Debug, Clone)]
pub struct Standing {
    /// The AVS.
    pub avs: Address,
    /// The set.
    pub set: u32,
    /// The operator.
    pub operator: Address,
    /// `isMemberOfOperatorSet`.
    pub member: bool,
    /// The registrar's `executorOperatorSetIds`.
    pub executor_sets: Vec<u32>,
    /// KeyRegistrar's curve type of the set.
    pub curve: u8,
    /// The operator's key in the set.
    pub key: RegisteredKey,
}

impl Standing {
    /// The one decision: a member, the set an executor set, and `key` the key registered (for
    /// BLS12-381, which KeyRegistrar cannot hold, membership and the executor set only).
    pub fn admits(&self, key: &OurKey) -> Result<(), Refusal> {
        self.admits_scheme(key.scheme())?;
        let (avs, set) = (self.avs, self.set);
        let mismatch = |registered: String| {
            Err(Refusal::KeyMismatch {
                avs,
                set,
                registered,
                ours: key.to_string(),
            })
        };
        match (&self.key, key) {
            (_, OurKey::Bls12381) => Ok(()),
            (RegisteredKey::Ecdsa(a), OurKey::Ecdsa(o)) if a.0 == o.0 => Ok(()),
            (RegisteredKey::Bn254(g2), OurKey::Bn254(o)) if g2.to_wire() == *o => Ok(()),
            (registered, _) => mismatch(registered.to_string()),
        }
    }

    /// [`Standing::admits`] short of comparing the key itself (`avsnode check-config`, which
    /// does not unlock keys): a member, an executor set, the set's curve the signer's scheme,
    /// and some valid key registered.
    pub fn admits_scheme(&self, scheme: Scheme) -> Result<(), Refusal> {
        let (avs, set, operator) = (self.avs, self.set, self.operator);
        if !self.member {
            return Err(Refusal::NotMember { operator, avs, set });
        }
        if !self.executor_sets.contains(&set) {
            return Err(Refusal::NotExecutorSet {
                avs,
                set,
                executor_sets: self.executor_sets.clone(),
            });
        }
        let wanted = match scheme {
            Scheme::Ecdsa => abi::CURVE_ECDSA,
            Scheme::Bn254 => abi::CURVE_BN254,
            Scheme::Bls12381 => return Ok(()),
        };
        if self.curve != wanted {
            return Err(Refusal::CurveType {
                avs,
                set,
                curve: self.curve,
                scheme,
            });
        }
        match &self.key {
            RegisteredKey::None => Err(Refusal::KeyNotRegistered { operator, avs, set }),
            RegisteredKey::Invalid(why) => Err(Refusal::KeyMismatch {
                avs,
                set,
                registered: format!("not a valid key ({why})"),
                ours: String::new(),
            }),
            RegisteredKey::Ecdsa(_) | RegisteredKey::Bn254(_) => Ok(()),
        }
    }
}

/// The start of a long key, for messages.
fn short(bytes: &[u8]) -> String {
    format!(
        "0x{}…",
        alloy_primitives::hex::encode(&bytes[..8.min(bytes.len())])
    )
}

impl std::fmt::Display for OurKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OurKey::Ecdsa(a) => write!(f, "{a}"),
            OurKey::Bn254(g2) => f.write_str(&short(g2)),
            OurKey::Bls12381 => f.write_str("a BLS12-381 key"),
        }
    }
}

impl std::fmt::Display for RegisteredKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RegisteredKey::None => f.write_str("none"),
            RegisteredKey::Ecdsa(a) => write!(f, "{}", ours(*a)),
            RegisteredKey::Bn254(g2) => f.write_str(&short(&g2.to_wire())),
            RegisteredKey::Invalid(why) => write!(f, "invalid ({why})"),
        }
    }
}

/// The follower's position.
#[derive(Debug, Default)]
struct Follow {
    /// `eth_chainId` answered as configured.
    verified: bool,
    /// The newest head reported.
    head: u64,
    /// Logs applied through this block.
    followed: u64,
    /// Hashes of blocks the follower stopped at, oldest first (reorg detection).
    hashes: VecDeque<(u64, B256)>,
    /// Blocks facts were read at before the follower got there, with their hashes: checked
    /// when it does.
    read_ahead: std::collections::BTreeMap<u64, B256>,
    /// When a round last succeeded.
    last_success: Option<Instant>,
    /// Why the last round failed, while it does.
    last_error: Option<String>,
    /// A refusal that stops all use of the chain (wrong chain id).
    fatal: Option<Refusal>,
}

/// How far ahead of the head a task's block may be read (a task names a block the node's RPC
/// may not have seen yet; far beyond, it names none).
const MAX_BLOCKS_AHEAD: u64 = 64;

/// Block hashes remembered for finding a reorg's common ancestor.
const HASHES_KEPT: usize = 128;

/// Reads and caches chain facts; see the module documentation.
#[derive(Debug)]
pub struct Chain {
    settings: Settings,
    rpc: Rpc,
    cache: Mutex<Cache>,
    follow: Mutex<Follow>,
    /// One read of missing facts at a time.
    reads: tokio::sync::Mutex<()>,
    /// Aggregators' BN254 keys prepared for verifying, by key: preparing costs a fifth of a
    /// check, and an aggregator signs every task it sends. Few keys (operator keys, which the
    /// fact cache holds by the thousand, are never prepared); emptied when it reaches
    /// [`PREPARED_KEYS`].
    prepared: Mutex<HashMap<[u8; 128], VerifyingKey>>,
    metrics: Arc<Metrics>,
}

/// At most this many prepared aggregator keys are kept (about 20 KB each).
const PREPARED_KEYS: usize = 256;

fn evm(a: Address) -> EvmAddress {
    EvmAddress::from(a.0)
}

fn ours(a: EvmAddress) -> Address {
    Address(a.into_array())
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn quantity(v: &Value) -> Result<u64, String> {
    let text = v
        .as_str()
        .ok_or_else(|| format!("not a hex quantity: {v}"))?;
    u64::from_str_radix(text.trim_start_matches("0x"), 16)
        .map_err(|e| format!("not a hex quantity {text:?}: {e}"))
}

fn hex_block(block: u64) -> Value {
    Value::String(format!("0x{block:x}"))
}

impl Chain {
    /// A reader for `settings`; no I/O until [`Chain::start`].
    pub fn new(settings: Settings, metrics: Arc<Metrics>) -> Result<Arc<Chain>, String> {
        metrics
            .register_chain()
            .map_err(|e| format!("registering the chain metrics: {e}"))?;
        let rpc = Rpc::new(
            settings.rpc_urls.clone(),
            settings.request_timeout,
            metrics.clone(),
        )
        .map_err(|e| format!("cannot load the system's TLS root certificates: {e}"))?;
        Ok(Arc::new(Chain {
            cache: Mutex::new(Cache::new(settings.cache_capacity, u64::MAX)),
            settings,
            rpc,
            follow: Mutex::new(Follow::default()),
            reads: tokio::sync::Mutex::new(()),
            prepared: Mutex::default(),
            metrics,
        }))
    }

    /// Checks the chain id and sets the follower's starting block. `Refused(WrongChain)` means
    /// the node must not start; `Unavailable` that no endpoint answered (the follower keeps
    /// trying, and chain checks are UNAVAILABLE until one does).
    pub async fn start(&self) -> Result<u64, ChainError> {
        let answers = self
            .rpc
            .batch(&[
                ("eth_chainId", json!([])),
                ("eth_getBlockByNumber", json!(["latest", false])),
            ])
            .await
            .map_err(|e| ChainError::Unavailable(e.0))?;
        let value = |i: usize| -> Result<&Value, ChainError> {
            answers[i]
                .as_ref()
                .map_err(|e| ChainError::Unavailable(format!("{e:?}")))
        };
        let got = quantity(value(0)?).map_err(ChainError::Unavailable)?;
        if got != self.settings.chain_id {
            let refusal = Refusal::WrongChain {
                expected: self.settings.chain_id,
                got,
            };
            lock(&self.follow).fatal = Some(refusal.clone());
            return Err(ChainError::Refused(refusal));
        }
        let (head, hash) = block_header(value(1)?).map_err(ChainError::Unavailable)?;
        let start = head.saturating_sub(self.settings.follow_distance);
        let start_hash = if start == head {
            hash
        } else {
            let answer = self
                .rpc
                .batch(&[("eth_getBlockByNumber", json!([hex_block(start), false]))])
                .await
                .map_err(|e| ChainError::Unavailable(e.0))?;
            let header = answer[0]
                .as_ref()
                .map_err(|e| ChainError::Unavailable(format!("{e:?}")))?;
            block_header(header).map_err(ChainError::Unavailable)?.1
        };
        {
            let mut follow = lock(&self.follow);
            follow.verified = true;
            follow.head = head;
            follow.followed = start;
            follow.hashes = VecDeque::from([(start, start_hash)]);
            follow.last_success = Some(Instant::now());
            follow.last_error = None;
        }
        lock(&self.cache).restart(start);
        self.gauges();
        info!(chain_id = got, head, "chain RPC answers");
        Ok(head)
    }

    /// Whether cached facts may serve; the reason when not.
    pub fn status(&self) -> Result<(), String> {
        let follow = lock(&self.follow);
        if let Some(fatal) = &follow.fatal {
            return Err(fatal.to_string());
        }
        if !follow.verified {
            return Err(format!(
                "no chain RPC endpoint has answered yet{}",
                follow
                    .last_error
                    .as_ref()
                    .map(|e| format!(": {e}"))
                    .unwrap_or_default()
            ));
        }
        let age = follow.last_success.map_or(Duration::MAX, |at| at.elapsed());
        if age > self.settings.serve_cached_for {
            return Err(format!(
                "no chain RPC endpoint has answered for {} s (cached facts serve for {} s){}",
                age.as_secs(),
                self.settings.serve_cached_for.as_secs(),
                follow
                    .last_error
                    .as_ref()
                    .map(|e| format!(": {e}"))
                    .unwrap_or_default()
            ));
        }
        Ok(())
    }

    /// The block a task's facts are read at: its own, or (0, as Hourglass sends when it has
    /// none) the newest head seen.
    fn block(&self, task_block: u64) -> u64 {
        if task_block == 0 {
            lock(&self.follow).head
        } else {
            task_block
        }
    }

    /// The key `aggregator` signs tasks of `avs` with at `block`: its key in the AVS's
    /// aggregator operator set (registrar → `getAvsConfig` → KeyRegistrar). `None`: it has none
    /// there.
    pub async fn aggregator_key(
        &self,
        avs: Address,
        aggregator: Address,
        task_block: u64,
    ) -> Result<Option<VerifyingKey>, ChainError> {
        self.status().map_err(ChainError::Unavailable)?;
        let block = self.block(task_block);
        let (avs, aggregator) = (evm(avs), evm(aggregator));
        let registrar = self.registrar(avs, block).await?;
        let set = self.avs_config(avs, registrar, block).await?.0;
        let curve = self.curve_type(avs, set, block).await?;
        let [Fact::Key(key)] = self
            .facts(block, [FactKey::Key(avs, set, aggregator, curve)])
            .await?
        else {
            unreachable!("a key fact is a key")
        };
        Ok(match key {
            RegisteredKey::Ecdsa(address) => Some(VerifyingKey::Ecdsa(ours(address))),
            RegisteredKey::Bn254(g2) => {
                let mut prepared = lock(&self.prepared);
                if prepared.len() >= PREPARED_KEYS {
                    prepared.clear();
                }
                Some(
                    prepared
                        .entry(g2.to_wire())
                        .or_insert_with(|| VerifyingKey::bn254(g2))
                        .clone(),
                )
            }
            RegisteredKey::None | RegisteredKey::Invalid(_) => None,
        })
    }

    /// What the chain says of `operator` in set `set` of `avs` at the task's block.
    pub async fn standing(
        &self,
        avs: Address,
        set: u32,
        operator: Address,
        task_block: u64,
    ) -> Result<Standing, ChainError> {
        self.status().map_err(ChainError::Unavailable)?;
        let block = self.block(task_block);
        let (avs_evm, operator_evm) = (evm(avs), evm(operator));
        let [
            Fact::Registrar(registrar),
            Fact::Member(member),
            Fact::CurveType(curve),
        ] = self
            .facts(
                block,
                [
                    FactKey::Registrar(avs_evm),
                    FactKey::Member(operator_evm, avs_evm, set),
                    FactKey::CurveType(avs_evm, set),
                ],
            )
            .await?
        else {
            unreachable!("facts come back in the order asked")
        };
        let executor_sets = self.avs_config(avs_evm, registrar, block).await?.1;
        let key = if curve == abi::CURVE_NONE {
            RegisteredKey::None
        } else {
            let [Fact::Key(key)] = self
                .facts(block, [FactKey::Key(avs_evm, set, operator_evm, curve)])
                .await?
            else {
                unreachable!("a key fact is a key")
            };
            key
        };
        Ok(Standing {
            avs,
            set,
            operator,
            member,
            executor_sets,
            curve,
            key,
        })
    }

    /// Whether `operator` may sign for set `set` of `avs` at the task's block with `key`
    /// ([`Standing::admits`]).
    pub async fn check_executor(
        &self,
        avs: Address,
        set: u32,
        operator: Address,
        task_block: u64,
        key: &OurKey,
    ) -> Result<(), ChainError> {
        self.standing(avs, set, operator, task_block)
            .await?
            .admits(key)
            .map_err(ChainError::Refused)
    }

    /// The verifier's `version()` and `domainSeparator()` at the newest head.
    pub async fn verifier_domain(
        &self,
        verifier: Address,
    ) -> Result<(String, [u8; 32]), ChainError> {
        let head = self.block(0);
        let to = evm(verifier);
        let answers = self
            .rpc
            .batch(&[
                eth_call(to, &abi::versionCall {}.abi_encode(), head),
                eth_call(to, &abi::domainSeparatorCall {}.abi_encode(), head),
            ])
            .await
            .map_err(|e| ChainError::Unavailable(e.0))?;
        let bytes = |i: usize| -> Result<Bytes, ChainError> {
            match &answers[i] {
                Ok(v) => serde_json::from_value::<Bytes>(v.clone())
                    .map_err(|e| ChainError::Unavailable(e.to_string())),
                Err(e) => Err(ChainError::Unavailable(format!(
                    "the certificate verifier {verifier} did not answer ({e:?})"
                ))),
            }
        };
        let version = abi::versionCall::abi_decode_returns(&bytes(0)?)
            .map_err(|e| ChainError::Unavailable(format!("version() of {verifier}: {e}")))?;
        let domain = abi::domainSeparatorCall::abi_decode_returns(&bytes(1)?).map_err(|e| {
            ChainError::Unavailable(format!("domainSeparator() of {verifier}: {e}"))
        })?;
        Ok((version, domain.0))
    }

    async fn registrar(&self, avs: EvmAddress, block: u64) -> Result<EvmAddress, ChainError> {
        let [Fact::Registrar(r)] = self.facts(block, [FactKey::Registrar(avs)]).await? else {
            unreachable!("a registrar fact is an address")
        };
        Ok(r)
    }

    async fn avs_config(
        &self,
        avs: EvmAddress,
        registrar: EvmAddress,
        block: u64,
    ) -> Result<(u32, Vec<u32>), ChainError> {
        match self.facts(block, [FactKey::AvsConfig(registrar)]).await {
            Ok(facts) => match facts.into_iter().next() {
                Some(Fact::AvsConfig {
                    aggregator_set,
                    executor_sets,
                }) => Ok((aggregator_set, executor_sets)),
                _ => unreachable!("an AVS config fact is one"),
            },
            Err(ChainError::Refused(Refusal::NoAvsConfig { why, .. })) => {
                Err(ChainError::Refused(Refusal::NoAvsConfig {
                    avs: ours(avs),
                    registrar: ours(registrar),
                    why,
                }))
            }
            Err(e) => Err(e),
        }
    }

    async fn curve_type(&self, avs: EvmAddress, set: u32, block: u64) -> Result<u8, ChainError> {
        let [Fact::CurveType(c)] = self.facts(block, [FactKey::CurveType(avs, set)]).await? else {
            unreachable!("a curve type fact is one")
        };
        Ok(c)
    }

    /// The facts `keys` at `block`, from the cache or read together in one batch.
    async fn facts<const N: usize>(
        &self,
        block: u64,
        keys: [FactKey; N],
    ) -> Result<[Fact; N], ChainError> {
        let mut found: [Option<Fact>; N] = std::array::from_fn(|_| None);
        let lookup = |found: &mut [Option<Fact>; N], count: bool| {
            let cache = lock(&self.cache);
            for (slot, key) in found.iter_mut().zip(&keys) {
                if slot.is_none() {
                    *slot = cache.get(key, block).cloned();
                    if count {
                        let result = if slot.is_some() { "hit" } else { "miss" };
                        self.metrics
                            .chain_cache
                            .with_label_values(&[key.kind(), result])
                            .inc();
                    }
                }
            }
        };
        lookup(&mut found, true);
        if found.iter().any(Option::is_none) {
            let _one_at_a_time = self.reads.lock().await;
            // Another task may have read them meanwhile.
            lookup(&mut found, false);
            let missing: Vec<usize> = (0..N).filter(|&i| found[i].is_none()).collect();
            if !missing.is_empty() {
                let ahead = {
                    let follow = lock(&self.follow);
                    if block > follow.head.saturating_add(MAX_BLOCKS_AHEAD) {
                        return Err(ChainError::Unavailable(format!(
                            "block {block} is more than {MAX_BLOCKS_AHEAD} blocks ahead of the chain head {}",
                            follow.head
                        )));
                    }
                    block > follow.followed
                };
                // Read ahead of the follower, the block's hash is kept: if the follower later
                // finds another block there, what was read from it is dropped.
                let mut calls: Vec<_> = missing
                    .iter()
                    .map(|&i| read_call(&keys[i], block, &self.settings))
                    .collect();
                if ahead {
                    calls.push(("eth_getBlockByNumber", json!([hex_block(block), false])));
                }
                let mut answers = self.rpc.batch(&calls).await.map_err(|e| {
                    ChainError::Unavailable(format!(
                        "reading chain facts at block {block}: {}",
                        e.0
                    ))
                })?;
                if ahead {
                    let header = answers.pop().and_then(Result::ok);
                    let hash = match header.as_ref().map(block_header) {
                        Some(Ok((_, hash))) => hash,
                        _ => {
                            return Err(ChainError::Unavailable(format!(
                                "block {block} is not on the chain yet"
                            )));
                        }
                    };
                    let mut follow = lock(&self.follow);
                    if follow.read_ahead.len() >= MAX_BLOCKS_AHEAD as usize * 2 {
                        return Err(ChainError::Unavailable(
                            "too many blocks read ahead of the follower".into(),
                        ));
                    }
                    follow.read_ahead.insert(block, hash);
                }
                let mut cache = lock(&self.cache);
                for (&i, answer) in missing.iter().zip(answers) {
                    let fact = decode(&keys[i], answer, block)?;
                    cache.insert(keys[i], block, fact.clone());
                    found[i] = Some(fact);
                }
                self.metrics
                    .chain_cache_facts
                    .set(i64::try_from(cache.len()).unwrap_or(i64::MAX));
            }
        }
        Ok(found.map(|f| f.expect("every fact found or read")))
    }

    /// Follows the chain until `stopped`: logs close cached facts, reorgs roll them back.
    pub async fn follow(self: Arc<Self>, mut stopped: tokio::sync::watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(self.settings.poll_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failing = false;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stopped.wait_for(|s| *s) => return,
            }
            let verified = lock(&self.follow).verified;
            let round = if verified {
                self.follow_once().await
            } else {
                self.start().await.map(|_| ()).map_err(|e| e.to_string())
            };
            match round {
                Ok(()) => {
                    if failing {
                        info!("chain RPC answers again");
                    }
                    failing = false;
                    let mut follow = lock(&self.follow);
                    follow.last_success = Some(Instant::now());
                    follow.last_error = None;
                }
                Err(why) => {
                    self.metrics.chain_follower_errors.inc();
                    if !failing {
                        warn!(%why, "chain follower: round failed; cached facts serve meanwhile");
                    }
                    failing = true;
                    lock(&self.follow).last_error = Some(why);
                }
            }
            self.gauges();
        }
    }

    /// Sets the chain gauges (`avsnode_chain_up` follows [`Chain::status`]).
    pub fn gauges(&self) {
        self.metrics.chain_up.set(i64::from(self.status().is_ok()));
        let follow = lock(&self.follow);
        self.metrics
            .chain_head_block
            .set(i64::try_from(follow.head).unwrap_or(i64::MAX));
        self.metrics
            .chain_head_lag
            .set(i64::try_from(follow.head.saturating_sub(follow.followed)).unwrap_or(i64::MAX));
    }

    /// One follower round: detect a reorg, then apply the logs of the next blocks.
    async fn follow_once(&self) -> Result<(), String> {
        let (followed, followed_hash) = {
            let follow = lock(&self.follow);
            let hash = follow.hashes.back().map(|(_, h)| *h);
            (follow.followed, hash)
        };
        let answers = self
            .rpc
            .batch(&[
                ("eth_blockNumber", json!([])),
                ("eth_getBlockByNumber", json!([hex_block(followed), false])),
            ])
            .await
            .map_err(|e| e.0)?;
        let head = quantity(
            answers[0]
                .as_ref()
                .map_err(|e| format!("eth_blockNumber: {e:?}"))?,
        )?;
        lock(&self.follow).head = head;
        let now_hash = match &answers[1] {
            Ok(Value::Null) => None,
            Ok(v) => Some(block_header(v)?.1),
            Err(e) => return Err(format!("eth_getBlockByNumber: {e:?}")),
        };
        if head < followed || now_hash != followed_hash {
            return self.reorg(head).await;
        }
        let target = head.saturating_sub(self.settings.follow_distance);
        if target <= followed {
            return Ok(());
        }
        let from = followed + 1;
        let to = target.min(followed + self.settings.max_log_range.max(1));
        let range = |filter: Value| {
            let mut filter = filter;
            filter["fromBlock"] = hex_block(from);
            filter["toBlock"] = hex_block(to);
            ("eth_getLogs", json!([filter]))
        };
        let registry = json!({
            "address": [evm(self.settings.allocation_manager), evm(self.settings.key_registrar)],
            "topics": [abi::registry_topics()],
        });
        let configs = json!({ "topics": [[abi::AvsConfigSet::SIGNATURE_HASH]] });
        let read_ahead: Vec<(u64, B256)> = lock(&self.follow)
            .read_ahead
            .range(..=to)
            .map(|(n, h)| (*n, *h))
            .collect();
        let mut calls = vec![
            range(registry),
            range(configs),
            ("eth_getBlockByNumber", json!([hex_block(to), false])),
        ];
        calls.extend(
            read_ahead
                .iter()
                .map(|(n, _)| ("eth_getBlockByNumber", json!([hex_block(*n), false]))),
        );
        let answers = self.rpc.batch(&calls).await.map_err(|e| e.0)?;
        // A block read ahead of the follower that is no longer on the chain: drop everything
        // read ahead of the follower (it has applied nothing past `followed` yet) and go on.
        for ((n, hash), answer) in read_ahead.iter().zip(&answers[3..]) {
            let now = match answer {
                Ok(v) if !v.is_null() => Some(block_header(v)?.1),
                Ok(_) => None,
                Err(e) => return Err(format!("eth_getBlockByNumber: {e:?}")),
            };
            if now != Some(*hash) {
                self.metrics.chain_reorgs.inc();
                warn!(
                    block = n,
                    "chain reorg: a block facts were read at was replaced"
                );
                lock(&self.cache).rollback(followed);
                lock(&self.follow).read_ahead.clear();
                return Ok(());
            }
        }
        let mut logs: Vec<Log> = Vec::new();
        for answer in &answers[..2] {
            let value = answer.as_ref().map_err(|e| format!("eth_getLogs: {e:?}"))?;
            logs.extend(
                serde_json::from_value::<Vec<Log>>(value.clone())
                    .map_err(|e| format!("eth_getLogs answer: {e}"))?,
            );
        }
        let to_hash = match &answers[2] {
            Ok(v) => block_header(v)?.1,
            Err(e) => return Err(format!("eth_getBlockByNumber: {e:?}")),
        };
        logs.sort_by_key(|l| (l.block_number, l.log_index));
        {
            let mut cache = lock(&self.cache);
            for log in &logs {
                for key in self.invalidated(log) {
                    cache.invalidate(key, log.block_number);
                }
            }
        }
        let mut follow = lock(&self.follow);
        follow.followed = to;
        follow.read_ahead.retain(|n, _| *n > to);
        follow.hashes.push_back((to, to_hash));
        while follow.hashes.len() > HASHES_KEPT {
            follow.hashes.pop_front();
        }
        Ok(())
    }

    /// The facts an event may have changed.
    fn invalidated(&self, log: &Log) -> Vec<FactKey> {
        let Some(topic0) = log.topics.first() else {
            return Vec::new();
        };
        let (am, kr) = (
            evm(self.settings.allocation_manager),
            evm(self.settings.key_registrar),
        );
        let (topics, data, from) = (log.topics.iter().copied(), &log.data, log.address);
        match *topic0 {
            t if t == abi::AvsConfigSet::SIGNATURE_HASH => vec![FactKey::AvsConfig(from)],
            t if t == abi::AVSRegistrarSet::SIGNATURE_HASH && from == am => {
                abi::AVSRegistrarSet::decode_raw_log(topics.clone(), data)
                    .map(|e| vec![FactKey::Registrar(e.avs)])
                    .unwrap_or_default()
            }
            t if t == abi::OperatorAddedToOperatorSet::SIGNATURE_HASH && from == am => {
                abi::OperatorAddedToOperatorSet::decode_raw_log(topics.clone(), data)
                    .map(|e| {
                        vec![FactKey::Member(
                            e.operator,
                            e.operatorSet.avs,
                            e.operatorSet.id,
                        )]
                    })
                    .unwrap_or_default()
            }
            t if t == abi::OperatorRemovedFromOperatorSet::SIGNATURE_HASH && from == am => {
                abi::OperatorRemovedFromOperatorSet::decode_raw_log(topics.clone(), data)
                    .map(|e| {
                        vec![FactKey::Member(
                            e.operator,
                            e.operatorSet.avs,
                            e.operatorSet.id,
                        )]
                    })
                    .unwrap_or_default()
            }
            t if t == abi::KeyRegistered::SIGNATURE_HASH && from == kr => {
                abi::KeyRegistered::decode_raw_log(topics.clone(), data)
                    .map(|e| key_facts(e.operatorSet.avs, e.operatorSet.id, e.operator))
                    .unwrap_or_default()
            }
            t if t == abi::KeyDeregistered::SIGNATURE_HASH && from == kr => {
                abi::KeyDeregistered::decode_raw_log(topics.clone(), data)
                    .map(|e| key_facts(e.operatorSet.avs, e.operatorSet.id, e.operator))
                    .unwrap_or_default()
            }
            t if t == abi::OperatorSetConfigured::SIGNATURE_HASH && from == kr => {
                abi::OperatorSetConfigured::decode_raw_log(topics.clone(), data)
                    .map(|e| vec![FactKey::CurveType(e.operatorSet.avs, e.operatorSet.id)])
                    .unwrap_or_default()
            }
            _ => Vec::new(),
        }
    }

    /// The head went back or a followed block changed: find the newest block we followed that
    /// is still on the chain, drop what was learned after it, and follow again from there.
    async fn reorg(&self, head: u64) -> Result<(), String> {
        let candidates: Vec<u64> = lock(&self.follow)
            .hashes
            .iter()
            .rev()
            .map(|(n, _)| *n)
            .filter(|n| *n <= head)
            .collect();
        let calls: Vec<_> = candidates
            .iter()
            .map(|n| ("eth_getBlockByNumber", json!([hex_block(*n), false])))
            .collect();
        let answers = self.rpc.batch(&calls).await.map_err(|e| e.0)?;
        let mut ancestor = None;
        {
            let follow = lock(&self.follow);
            for (n, answer) in candidates.iter().zip(&answers) {
                let Ok(v) = answer else { continue };
                let Ok((_, hash)) = block_header(v) else {
                    continue;
                };
                if follow.hashes.iter().any(|(m, h)| m == n && *h == hash) {
                    ancestor = Some(*n);
                    break;
                }
            }
        }
        // None of the remembered blocks survived: start over from the head.
        let ancestor = match ancestor {
            Some(a) => a,
            None => {
                let oldest = lock(&self.follow).hashes.front().map_or(0, |(n, _)| *n);
                oldest.saturating_sub(1).min(head)
            }
        };
        self.metrics.chain_reorgs.inc();
        warn!(
            ancestor,
            head, "chain reorg: facts read after the common ancestor dropped"
        );
        lock(&self.cache).rollback(ancestor);
        let known = {
            let mut follow = lock(&self.follow);
            follow.hashes.retain(|(n, _)| *n <= ancestor);
            follow.read_ahead.retain(|n, _| *n <= ancestor);
            follow.followed = ancestor;
            !follow.hashes.is_empty()
        };
        if !known {
            // The ancestor's hash is needed to notice the next reorg.
            let answer = self
                .rpc
                .batch(&[("eth_getBlockByNumber", json!([hex_block(ancestor), false]))])
                .await
                .map_err(|e| e.0)?;
            let hash = block_header(answer[0].as_ref().map_err(|e| format!("{e:?}"))?)?.1;
            lock(&self.follow).hashes.push_back((ancestor, hash));
        }
        Ok(())
    }
}

fn key_facts(avs: EvmAddress, set: u32, operator: EvmAddress) -> Vec<FactKey> {
    [abi::CURVE_NONE, abi::CURVE_ECDSA, abi::CURVE_BN254]
        .into_iter()
        .map(|curve| FactKey::Key(avs, set, operator, curve))
        .collect()
}

/// A log as `eth_getLogs` returns it (the fields the follower uses).
#[derive(Debug, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct Log {
    address: EvmAddress,
    topics: Vec<B256>,
    data: Bytes,
    #[serde(deserialize_with = "u64_quantity")]
    block_number: u64,
    #[serde(deserialize_with = "u64_quantity")]
    log_index: u64,
}

fn u64_quantity<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let v = Value::deserialize(d)?;
    quantity(&v).map_err(serde::de::Error::custom)
}

use serde::Deserialize as _;

/// A block header's number and hash.
fn block_header(v: &Value) -> Result<(u64, B256), String> {
    let number = quantity(&v["number"])?;
    let hash = v["hash"]
        .as_str()
        .and_then(|h| h.parse::<B256>().ok())
        .ok_or_else(|| format!("block {number} has no hash"))?;
    Ok((number, hash))
}

fn eth_call(to: EvmAddress, data: &[u8], block: u64) -> (&'static str, Value) {
    (
        "eth_call",
        json!([{ "to": to, "data": Bytes::copy_from_slice(data) }, hex_block(block)]),
    )
}

/// The call that reads `key`.
fn read_call(key: &FactKey, block: u64, settings: &Settings) -> (&'static str, Value) {
    let (am, kr) = (
        evm(settings.allocation_manager),
        evm(settings.key_registrar),
    );
    let set = |avs: EvmAddress, id: u32| abi::operator_set(avs, id);
    match *key {
        FactKey::Registrar(avs) => {
            eth_call(am, &abi::getAVSRegistrarCall { avs }.abi_encode(), block)
        }
        FactKey::AvsConfig(registrar) => {
            eth_call(registrar, &abi::getAvsConfigCall {}.abi_encode(), block)
        }
        FactKey::CurveType(avs, id) => eth_call(
            kr,
            &abi::getOperatorSetCurveTypeCall {
                operatorSet: set(avs, id),
            }
            .abi_encode(),
            block,
        ),
        FactKey::Key(avs, id, operator, abi::CURVE_BN254) => eth_call(
            kr,
            &abi::getBN254KeyCall {
                operatorSet: set(avs, id),
                operator,
            }
            .abi_encode(),
            block,
        ),
        FactKey::Key(avs, id, operator, _) => eth_call(
            kr,
            &abi::getECDSAAddressCall {
                operatorSet: set(avs, id),
                operator,
            }
            .abi_encode(),
            block,
        ),
        FactKey::Member(operator, avs, id) => eth_call(
            am,
            &abi::isMemberOfOperatorSetCall {
                operator,
                operatorSet: set(avs, id),
            }
            .abi_encode(),
            block,
        ),
    }
}

/// Decodes the answer to [`read_call`]. A revert is a fact where the contract means "none"
/// (a key asked in a set of another curve); elsewhere it refuses or is unavailable.
fn decode(key: &FactKey, answer: Result<Value, CallError>, block: u64) -> Result<Fact, ChainError> {
    let unavailable =
        |why: String| ChainError::Unavailable(format!("{} at block {block}: {why}", key.kind()));
    let bytes = match answer {
        Ok(v) => serde_json::from_value::<Bytes>(v).map_err(|e| unavailable(e.to_string()))?,
        Err(CallError::Reverted(data)) => {
            return match key {
                FactKey::Key(..) => Ok(Fact::Key(RegisteredKey::None)),
                FactKey::AvsConfig(registrar) => Err(ChainError::Refused(Refusal::NoAvsConfig {
                    avs: ours(*registrar),
                    registrar: ours(*registrar),
                    why: format!("getAvsConfig() reverted {data}"),
                })),
                _ => Err(unavailable(format!("reverted {data}"))),
            };
        }
        Err(CallError::Error(e)) => return Err(unavailable(e)),
    };
    let bad = |e: alloy_sol_types::Error| unavailable(format!("undecodable answer: {e}"));
    Ok(match *key {
        FactKey::Registrar(_) => {
            Fact::Registrar(abi::getAVSRegistrarCall::abi_decode_returns(&bytes).map_err(bad)?)
        }
        FactKey::AvsConfig(registrar) => match abi::getAvsConfigCall::abi_decode_returns(&bytes) {
            Ok(c) => Fact::AvsConfig {
                aggregator_set: c.aggregatorOperatorSetId,
                executor_sets: c.executorOperatorSetIds,
            },
            Err(e) => {
                return Err(ChainError::Refused(Refusal::NoAvsConfig {
                    avs: ours(registrar),
                    registrar: ours(registrar),
                    why: format!("getAvsConfig() answered {} bytes: {e}", bytes.len()),
                }));
            }
        },
        FactKey::CurveType(..) => Fact::CurveType(
            abi::getOperatorSetCurveTypeCall::abi_decode_returns(&bytes).map_err(bad)?,
        ),
        FactKey::Key(_, _, _, abi::CURVE_BN254) => {
            let key = abi::getBN254KeyCall::abi_decode_returns(&bytes).map_err(bad)?;
            let words = [key.g2.X[0], key.g2.X[1], key.g2.Y[0], key.g2.Y[1]];
            if words.iter().all(|w| *w == U256::ZERO) {
                Fact::Key(RegisteredKey::None)
            } else {
                let mut wire = [0u8; 128];
                for (chunk, w) in wire.chunks_exact_mut(32).zip(words) {
                    chunk.copy_from_slice(&w.to_be_bytes::<32>());
                }
                Fact::Key(match G2PublicKey::from_wire(&wire) {
                    Ok(g2) => RegisteredKey::Bn254(g2),
                    Err(e) => RegisteredKey::Invalid(e.to_string()),
                })
            }
        }
        FactKey::Key(_, _, _, abi::CURVE_ECDSA) => {
            let a = abi::getECDSAAddressCall::abi_decode_returns(&bytes).map_err(bad)?;
            Fact::Key(if a.is_zero() {
                RegisteredKey::None
            } else {
                RegisteredKey::Ecdsa(a)
            })
        }
        FactKey::Key(..) => Fact::Key(RegisteredKey::None),
        FactKey::Member(..) => {
            Fact::Member(abi::isMemberOfOperatorSetCall::abi_decode_returns(&bytes).map_err(bad)?)
        }
    })
}
