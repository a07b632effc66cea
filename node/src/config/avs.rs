//! `[[avs]]`: the AVSs this node serves, their aggregators and operator sets.

use std::collections::{BTreeMap, HashSet};
use std::str::FromStr;
use std::time::Duration;

use avsnode_signer::messages::{Address, EcdsaVerifier};
use avsnode_signer::{Scheme, VerifyingKey};
use avsnode_signing::definition::{duration, scheme};
use rustls_pki_types::DnsName;
use serde::Deserialize;

use super::{Config, Parsed, PerformerConfig, Problem, defaults};

/// `[[avs]]`: one AVS this node serves.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AvsConfig {
    /// The AVS's address.
    pub address: Parsed<Address>,
    /// Oldest `reference_timestamp` accepted (default `"1h"`); must be below `ledger.retention`.
    #[serde(default = "defaults::max_staleness", deserialize_with = "duration")]
    pub max_staleness: Duration,
    /// How far in the future a `reference_timestamp` may be (clock skew; default `"30s"`).
    #[serde(default = "defaults::max_clock_skew", deserialize_with = "duration")]
    pub max_clock_skew: Duration,
    /// Deadline of a version-1 task sent without a gRPC deadline (default `"10s"`).
    #[serde(default = "defaults::task_timeout", deserialize_with = "duration")]
    pub task_timeout: Duration,
    /// Tasks with less time than this left are rejected up front (default `"50ms"`).
    #[serde(
        default = "defaults::min_execution_time",
        deserialize_with = "duration"
    )]
    pub min_execution_time: Duration,
    /// Tasks in the performer at once (default 32).
    #[serde(default = "defaults::max_concurrency")]
    pub max_concurrency: usize,
    /// Tasks waiting for a performer slot; beyond it, RESOURCE_EXHAUSTED (default 1024).
    #[serde(default = "defaults::queue_depth")]
    pub queue_depth: usize,
    /// Largest task payload in bytes (default 1 MiB).
    #[serde(default = "defaults::max_payload_size")]
    pub max_payload_size: usize,
    /// Largest performer output in bytes (default 1.5 MiB − 1: the Hourglass aggregator drops
    /// outputs of 1.5 MiB or more).
    #[serde(default = "defaults::max_output_size")]
    pub max_output_size: usize,
    /// Tasks per second one aggregator may send from one network address, checked before its
    /// signature is (default 5000); excess tasks get RESOURCE_EXHAUSTED `rate_limited`.
    #[serde(default = "defaults::aggregator_rate_limit")]
    pub aggregator_rate_limit: f64,
    /// Tasks an aggregator may send at once above that rate (default 10000).
    #[serde(default = "defaults::aggregator_burst")]
    pub aggregator_burst: u32,
    /// Aggregators whose task signatures are accepted: `[[avs.aggregators]]` tables, or
    /// `"from_chain"` (their keys in the AVS's aggregator operator set, read from `[chain]`).
    pub aggregators: Aggregators,
    /// Operator sets this node signs for, each with its signer.
    pub operator_sets: Vec<OperatorSetConfig>,
    /// Where this AVS's tasks run.
    pub performer: PerformerConfig,
}

/// `avs.aggregators`: listed in the file, or read from chain.
#[derive(Debug, Clone, PartialEq)]
pub enum Aggregators {
    /// `[[avs.aggregators]]`: these keys.
    Static(Vec<AggregatorConfig>),
    /// `aggregators = "from_chain"`: the AVS's registrar names its aggregator operator set; a
    /// task's aggregator must have a key there at the task's block.
    FromChain,
}

impl Aggregators {
    /// The listed aggregators (none when read from chain).
    pub fn list(&self) -> &[AggregatorConfig] {
        match self {
            Aggregators::Static(list) => list,
            Aggregators::FromChain => &[],
        }
    }
}

impl<'de> Deserialize<'de> for Aggregators {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Aggregators, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Aggregators;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("[[avs.aggregators]] tables, or \"from_chain\"")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Aggregators, E> {
                if v == "from_chain" {
                    Ok(Aggregators::FromChain)
                } else {
                    Err(E::invalid_value(serde::de::Unexpected::Str(v), &self))
                }
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                seq: A,
            ) -> Result<Aggregators, A::Error> {
                Vec::deserialize(serde::de::value::SeqAccessDeserializer::new(seq))
                    .map(Aggregators::Static)
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// An aggregator allowed to send tasks.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AggregatorConfig {
    /// The scheme of its task signatures.
    #[serde(deserialize_with = "scheme")]
    pub scheme: Scheme,
    /// Its address, as sent in `aggregator_address` (for ecdsa, also the signer recovered).
    pub address: Parsed<Address>,
    /// For bn254: its G2 public key (128-byte EVM wire hex); for bls12-381: its 48-byte
    /// compressed public key. Not used for ecdsa.
    #[serde(default)]
    pub public_key: Option<String>,
    /// With mutual TLS on the intake (`intake.tls.client_ca`): DNS names (subjectAltName) of the
    /// client certificates this aggregator connects with. A task naming this aggregator over a
    /// connection whose certificate is valid for none of them is refused (PERMISSION_DENIED
    /// `client_certificate`). Required with mutual TLS; not allowed without it.
    #[serde(default)]
    pub tls_client_names: Vec<Parsed<TlsName>>,
    /// The key its task signatures verify with, decoded from `scheme`, `address` and
    /// `public_key` once the file is read (`Config::from_toml`).
    #[serde(skip)]
    key: Option<VerifyingKey>,
}

/// Equal when written the same (the key is decoded from what is compared).
impl PartialEq for AggregatorConfig {
    fn eq(&self, other: &AggregatorConfig) -> bool {
        (
            self.scheme,
            &self.address,
            &self.public_key,
            &self.tls_client_names,
        ) == (
            other.scheme,
            &other.address,
            &other.public_key,
            &other.tls_client_names,
        )
    }
}

impl AggregatorConfig {
    /// The key its task signatures verify with.
    ///
    /// # Panics
    /// On a configuration that did not come from `Config::from_toml`, which decodes every key
    /// (and refuses the file if one does not decode).
    pub fn key(&self) -> &VerifyingKey {
        self.key
            .as_ref()
            .expect("aggregator keys are decoded when the configuration is read")
    }
}

/// A DNS name a client certificate must be valid for (`tls_client_names`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsName(pub DnsName<'static>);

impl FromStr for TlsName {
    type Err = String;

    fn from_str(s: &str) -> Result<TlsName, String> {
        DnsName::try_from(s.to_owned())
            .map(TlsName)
            .map_err(|_| format!("{s:?} is not a DNS name"))
    }
}

/// An operator set this node signs for.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OperatorSetConfig {
    /// The operator set id.
    pub id: u32,
    /// The `[[signer]]` whose key signs results for this set; its scheme is the set's scheme.
    pub signer: String,
    /// ecdsa only: the certificate verifier contract (part of the EIP-712 domain).
    #[serde(default)]
    pub verifier: Option<Parsed<Address>>,
    /// ecdsa only: the verifier contract's `version()` string, e.g. `"1.2.3"`. The EIP-712
    /// `version` is derived from it by the contract's rule (its first character, as
    /// eigenlayer-contracts v1.7.0–v1.9.0 do); a bare `"1"` means the same. With `[chain]` it
    /// may be left out: the node reads `version()` at start-up, and with or without it checks
    /// the derived domain against the contract's `domainSeparator()`.
    #[serde(default)]
    pub verifier_version: Option<String>,
    /// ecdsa only, optional: the verifier's `domainSeparator()` as read from chain (`0x` + 64 hex).
    /// When set, the node refuses to start unless the domain it derives from `verifier` and
    /// `verifier_version` is exactly this one.
    #[serde(default)]
    pub verifier_domain_separator: Option<String>,
}

/// `0x` and 64 hex digits.
fn parse_hex32(text: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(text.strip_prefix("0x")?, &mut out).ok()?;
    Some(out)
}

impl OperatorSetConfig {
    /// The ECDSA certificate verifier, if both fields are set and the address parses (validation
    /// reports the rest).
    pub fn ecdsa_verifier(&self) -> Option<EcdsaVerifier> {
        Some(EcdsaVerifier {
            address: *self.verifier.as_ref()?.ok()?,
            version: self.verifier_version.clone()?,
        })
    }
}

impl Config {
    /// Decodes every aggregator's key (what [`AggregatorConfig::key`] returns); a key that does
    /// not decode is a problem of its `public_key` (for ecdsa, of its `address`).
    pub(super) fn decode_aggregator_keys(&mut self) -> Vec<Problem> {
        let mut problems = Vec::new();
        for (i, avs) in self.avs.iter_mut().enumerate() {
            let Aggregators::Static(list) = &mut avs.aggregators else {
                continue;
            };
            for (j, agg) in list.iter_mut().enumerate() {
                match VerifyingKey::from_config(
                    agg.scheme,
                    agg.address.as_str(),
                    agg.public_key.as_deref(),
                ) {
                    Ok(key) => agg.key = Some(key),
                    // An unparsable ecdsa address is already its `address` problem.
                    Err(_) if agg.scheme == Scheme::Ecdsa && agg.address.error().is_some() => {}
                    Err(message) => problems.push(Problem {
                        path: format!("avs[{i}].aggregators[{j}].public_key"),
                        message,
                    }),
                }
            }
        }
        problems
    }

    /// Problems of every `[[avs]]`, including what ties them to `[[signer]]`, `[ledger]` and the intake's TLS.
    pub(super) fn avs_problems(&self, problem: &mut dyn FnMut(String, String)) {
        if self.avs.is_empty() {
            problem(
                "avs".into(),
                "no [[avs]] configured: the node would serve nothing".into(),
            );
        }

        let mutual_tls = self
            .intake
            .tls
            .as_ref()
            .is_some_and(|t| t.client_ca.is_some());
        let mut avs_seen = HashSet::new();
        for (i, avs) in self.avs.iter().enumerate() {
            let at = |key: &str| format!("avs[{i}].{key}");
            match avs.address.ok() {
                Some(a) if !avs_seen.insert(*a) => {
                    problem(at("address"), format!("AVS {a} is configured twice"))
                }
                Some(_) => {}
                None => problem(
                    at("address"),
                    avs.address.error().unwrap_or_default().into(),
                ),
            }
            if avs.max_staleness >= self.ledger.retention {
                problem(
                    at("max_staleness"),
                    format!(
                        "must be below ledger.retention ({}), or a pruned task could be signed again",
                        humantime::format_duration(self.ledger.retention)
                    ),
                );
            }
            if !(avs.aggregator_rate_limit.is_finite() && avs.aggregator_rate_limit > 0.0) {
                problem(
                    at("aggregator_rate_limit"),
                    "must be a positive number of tasks per second".into(),
                );
            }
            if avs.aggregator_burst == 0 {
                problem(at("aggregator_burst"), "must be at least 1".into());
            }
            if avs.max_concurrency == 0 {
                problem(at("max_concurrency"), "must be at least 1".into());
            }
            if avs.task_timeout <= avs.min_execution_time {
                problem(at("task_timeout"), "must exceed min_execution_time".into());
            }
            match &avs.aggregators {
                Aggregators::Static(list) if list.is_empty() => problem(
                    at("aggregators"),
                    "no aggregator configured: every task would be refused".into(),
                ),
                Aggregators::FromChain if self.chain.is_none() => problem(
                    at("aggregators"),
                    "\"from_chain\" needs a [chain] section (rpc_urls, chain_id, allocation_manager, key_registrar)".into(),
                ),
                _ => {}
            }
            for (j, agg) in avs.aggregators.list().iter().enumerate() {
                let at = |key: &str| format!("avs[{i}].aggregators[{j}].{key}");
                if let Some(e) = agg.address.error() {
                    problem(at("address"), e.to_owned());
                }
                match (mutual_tls, agg.tls_client_names.is_empty()) {
                    (true, true) => problem(
                        at("tls_client_names"),
                        "required with mutual TLS on the intake (intake.tls.client_ca): the DNS \
                         names of this aggregator's client certificate"
                            .into(),
                    ),
                    (false, false) => problem(
                        at("tls_client_names"),
                        "only used with mutual TLS on the intake; set intake.tls.client_ca".into(),
                    ),
                    _ => {}
                }
                for name in &agg.tls_client_names {
                    if let Some(e) = name.error() {
                        problem(at("tls_client_names"), e.to_owned());
                    }
                }
            }
            if avs.operator_sets.is_empty() {
                problem(at("operator_sets"), "no operator set configured".into());
            }
            let mut ids = HashSet::new();
            for (j, set) in avs.operator_sets.iter().enumerate() {
                let at = |key: &str| format!("avs[{i}].operator_sets[{j}].{key}");
                if !ids.insert(set.id) {
                    problem(
                        at("id"),
                        format!("operator set {} is configured twice", set.id),
                    );
                }
                let Some(signer) = self.signers.iter().find(|s| s.name == set.signer) else {
                    problem(at("signer"), format!("no signer named {:?}", set.signer));
                    continue;
                };
                let is_ecdsa = signer.scheme == Scheme::Ecdsa;
                match (&set.verifier, is_ecdsa) {
                    (Some(v), true) => {
                        if let Some(e) = v.error() {
                            problem(at("verifier"), e.to_owned());
                        }
                    }
                    (None, true) => problem(
                        at("verifier"),
                        "required for an ecdsa operator set (the EIP-712 verifyingContract)".into(),
                    ),
                    (Some(_), false) => problem(
                        at("verifier"),
                        format!(
                            "only ecdsa operator sets have a verifier; signer {:?} is {}",
                            signer.name, signer.scheme
                        ),
                    ),
                    (None, false) => {}
                }
                match (&set.verifier_version, is_ecdsa) {
                    (Some(v), true) => {
                        let verifier = EcdsaVerifier {
                            address: Address([0; 20]),
                            version: v.clone(),
                        };
                        if let Err(e) = verifier.eip712_version() {
                            problem(at("verifier_version"), e.to_string());
                        }
                    }
                    // With [chain], read from the verifier's version() at start-up.
                    (None, true) if self.chain.is_some() => {}
                    (None, true) => problem(
                        at("verifier_version"),
                        "required for an ecdsa operator set: the verifier contract's version(), \
                         e.g. \"1.0.0\""
                            .into(),
                    ),
                    (Some(_), false) => problem(
                        at("verifier_version"),
                        "only ecdsa operator sets have a verifier version".into(),
                    ),
                    (None, false) => {}
                }
                if let Some(pinned) = &set.verifier_domain_separator {
                    match (parse_hex32(pinned), set.ecdsa_verifier()) {
                        (None, _) => problem(
                            at("verifier_domain_separator"),
                            "expected 0x and 64 hex digits".into(),
                        ),
                        (Some(_), None) => problem(
                            at("verifier_domain_separator"),
                            "only ecdsa operator sets with a verifier and verifier_version have one"
                                .into(),
                        ),
                        (Some(pinned), Some(verifier)) => {
                            if let Ok(derived) = verifier.domain_separator()
                                && derived != pinned
                            {
                                problem(
                                    at("verifier_domain_separator"),
                                    format!(
                                        "the domain separator of verifier {} with version {:?} \
                                         is 0x{}, not this one: check verifier and \
                                         verifier_version against the contract's version()",
                                        verifier.address,
                                        verifier.version,
                                        hex::encode(derived)
                                    ),
                                );
                            }
                        }
                    }
                }
            }
            match &avs.performer {
                PerformerConfig::Process { command, .. } if command.as_os_str().is_empty() => {
                    problem(at("performer.command"), "must not be empty".into());
                }
                PerformerConfig::Remote { endpoint }
                    if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) =>
                {
                    problem(
                        at("performer.endpoint"),
                        format!("{endpoint:?} must start with http:// or https://"),
                    );
                }
                PerformerConfig::Docker(docker) => {
                    let at = |key: &str| format!("avs[{i}].performer.{key}");
                    if docker.image.as_deref().is_some_and(str::is_empty) {
                        problem(
                            at("image"),
                            "must not be empty (leave it out to deploy later)".into(),
                        );
                    }
                    if let Some(e) = docker.pull.error() {
                        problem(at("pull"), e.to_owned());
                    }
                    if docker.port == 0 {
                        problem(at("port"), "must not be 0".into());
                    }
                    if docker.startup_timeout.is_zero() || docker.health_interval.is_zero() {
                        problem(
                            at("health_interval"),
                            "health_interval and startup_timeout must be above 0".into(),
                        );
                    }
                    if docker.tmpfs_mib > 1 << 20 || docker.resources.memory_mib > 1 << 30 {
                        problem(
                            at("resources.memory_mib"),
                            "memory_mib and tmpfs_mib must be at most 1 TiB".into(),
                        );
                    }
                    if !(docker.resources.cpus >= 0.0 && docker.resources.cpus <= 1024.0) {
                        problem(
                            at("resources.cpus"),
                            "must be between 0 (unlimited) and 1024".into(),
                        );
                    }
                }
                _ => {}
            }
            let env = match &avs.performer {
                PerformerConfig::Process { env, .. } => Some(env),
                PerformerConfig::Docker(docker) => Some(&docker.env),
                PerformerConfig::Remote { .. } => None,
            };
            for name in env.into_iter().flat_map(BTreeMap::keys) {
                if let Err(why) = avsnode_performer::check_env_name(name) {
                    problem(at("performer.env"), why);
                }
            }
        }
    }
}
